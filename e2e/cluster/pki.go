package cluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// pki holds the file names of the generated credentials.
type pki struct {
	caCert, servingCert, servingKey, saKey, saPub, tokens string
	caPEM                                                 []byte
	adminToken                                            string
	userTokens                                            map[string]string
	// The next CA and its serving certificate and key (PEM).
	nextCAPEM, nextServingPEM, nextServingKeyPEM []byte
}

// writePKI generates a test CA, a serving certificate for ips signed by it,
// a service-account signing key, an admin static token and one for each
// user, under dir.
func writePKI(dir string, ips []net.IP, users []StaticUser) (*pki, error) {
	p := &pki{
		caCert:      filepath.Join(dir, "ca.crt"),
		servingCert: filepath.Join(dir, "apiserver.crt"),
		servingKey:  filepath.Join(dir, "apiserver.key"),
		saKey:       filepath.Join(dir, "sa.key"),
		saPub:       filepath.Join(dir, "sa.pub"),
		tokens:      filepath.Join(dir, "tokens.csv"),
	}
	now := time.Now()
	caPEM, srvPEM, srvKeyPEM, err := servingCA(now, "proa-e2e-ca", ips)
	if err != nil {
		return nil, err
	}
	p.caPEM = caPEM
	// A second CA and serving certificate, for RotateServingCA.
	if p.nextCAPEM, p.nextServingPEM, p.nextServingKeyPEM, err = servingCA(now, "proa-e2e-ca-2", ips); err != nil {
		return nil, err
	}

	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	saPubDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, err
	}

	newToken := func() (string, error) {
		tok := make([]byte, 24)
		_, err := rand.Read(tok)
		return hex.EncodeToString(tok), err
	}
	if p.adminToken, err = newToken(); err != nil {
		return nil, err
	}
	tokens := p.adminToken + ",admin,admin,system:masters\n"
	p.userTokens = map[string]string{}
	for _, u := range users {
		tok, err := newToken()
		if err != nil {
			return nil, err
		}
		p.userTokens[u.Name] = tok
		tokens += fmt.Sprintf("%s,%s,%s,%q\n", tok, u.Name, u.Name, strings.Join(u.Groups, ","))
	}

	files := []struct {
		name string
		data []byte
	}{
		{p.caCert, p.caPEM},
		{p.servingCert, srvPEM},
		{p.servingKey, srvKeyPEM},
		{p.saKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)})},
		{p.saPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPubDER})},
		{p.tokens, []byte(tokens)},
	}
	for _, f := range files {
		if err := os.WriteFile(f.name, f.data, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// servingCA generates a CA and a serving certificate for ips (and the
// kubernetes Service's names) signed by it, all PEM-encoded.
func servingCA(now time.Time, name string, ips []net.IP) (caPEM, certPEM, keyPEM []byte, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(48 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, nil, nil, err
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(48 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  ips,
		DNSNames:     []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, err
	}
	srvKeyDER, err := x509.MarshalPKCS8PrivateKey(srvKey)
	if err != nil {
		return nil, nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: srvKeyDER}), nil
}
