package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

// meshMain is a mesh-like sidecar: a TCP proxy on MESH_LISTEN (default
// 127.0.0.1:15443) to the API server ($KUBERNETES_SERVICE_HOST:PORT, as the
// kubelet sets them), carrying the Pod's API traffic as Istio's and
// Linkerd's proxies do, with an admin server on MESH_ADMIN (default :15020):
// GET /healthz/ready, and GET or POST /quitquitquit, after which it exits at
// once, cutting every connection it carries.
func meshMain() {
	const src = "mesh"
	listen := os.Getenv("MESH_LISTEN")
	if listen == "" {
		listen = "127.0.0.1:15443"
	}
	admin := os.Getenv("MESH_ADMIN")
	if admin == "" {
		admin = ":15020"
	}
	upstream := net.JoinHostPort(os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT"))
	l, err := net.Listen("tcp", listen)
	if err != nil {
		event(src, "listen failed", "err", err.Error())
		os.Exit(1)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.DialTimeout("tcp", upstream, 5*time.Second)
				if err != nil {
					event(src, "upstream failed", "err", err.Error())
					return
				}
				defer u.Close()
				event(src, "proxying", "from", c.RemoteAddr().String(), "to", upstream)
				done := make(chan struct{}, 2)
				go func() { io.Copy(u, c); done <- struct{}{} }()
				go func() { io.Copy(c, u); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz/ready", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/quitquitquit", func(w http.ResponseWriter, r *http.Request) {
		event(src, "quit requested", "method", r.Method, "user_agent", r.UserAgent())
		fmt.Fprintln(w, "bye")
		w.(http.Flusher).Flush()
		go func() {
			time.Sleep(50 * time.Millisecond) // let the answer leave
			event(src, "exiting", "code", 0, "why", "quit")
			os.Exit(0)
		}()
	})
	event(src, "started", "listen", listen, "admin", admin, "upstream", upstream, "uid", os.Getuid())
	err = http.ListenAndServe(admin, mux)
	event(src, "admin server failed", "err", err.Error())
	os.Exit(1)
}
