package broker

import (
	"embed"
	"io/fs"
	"net/http"
)

// The supervisor wallboard: static files embedded in the binary, no build
// step. It talks to the broker over the public protocol only.
//
//go:embed web
var webFiles embed.FS

func (s *Server) webRoutes(r *routes) {
	sub, _ := fs.Sub(webFiles, "web")
	files := http.FileServerFS(sub)
	r.handle("GET /{$}", func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, req)
	})
	r.handle("GET /static/", func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		http.StripPrefix("/static/", files).ServeHTTP(w, req)
	})
}
