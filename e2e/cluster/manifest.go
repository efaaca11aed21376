package cluster

import (
	"regexp"
	"strings"
)

// SplitYAML splits a multi-document YAML stream on "---" lines and drops
// documents holding only comments and blank lines.
func SplitYAML(data string) []string {
	var docs []string
	var cur []string
	flush := func() {
		for _, l := range cur {
			if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") {
				docs = append(docs, strings.Join(cur, "\n")+"\n")
				break
			}
		}
		cur = nil
	}
	for _, line := range strings.Split(data, "\n") {
		if strings.TrimRight(line, " \t\r") == "---" || strings.HasPrefix(line, "--- ") {
			flush()
			continue
		}
		cur = append(cur, line)
	}
	flush()
	return docs
}

var (
	topKey = regexp.MustCompile(`^([A-Za-z]+):\s*(.*?)\s*$`)
	nsKey  = regexp.MustCompile(`^\s+namespace:\s*["']?([^"'\s#]+)`)
)

// TopLevel reads apiVersion, kind and metadata.namespace from a document
// without a YAML library: enough for plain manifests.
func TopLevel(doc string) (apiVersion, kind, ns string) {
	inMeta := false
	for _, line := range strings.Split(doc, "\n") {
		if m := topKey.FindStringSubmatch(line); m != nil {
			inMeta = m[1] == "metadata"
			v := strings.Trim(m[2], `"'`)
			switch m[1] {
			case "apiVersion":
				apiVersion = v
			case "kind":
				kind = v
			}
			continue
		}
		if m := nsKey.FindStringSubmatch(line); inMeta && m != nil && ns == "" && indent(line) == 2 {
			ns = m[1]
		}
	}
	return apiVersion, kind, ns
}

func indent(s string) int { return len(s) - len(strings.TrimLeft(s, " ")) }

var nonName = regexp.MustCompile(`[^a-z0-9]+`)

// DNSName makes a DNS-1123 label of at most 50 characters from s (a test's
// name, say), for Pod and namespace names.
func DNSName(s string) string {
	n := strings.Trim(nonName.ReplaceAllString(strings.ToLower(s), "-"), "-")
	if len(n) > 50 {
		n = strings.Trim(n[:50], "-")
	}
	return n
}
