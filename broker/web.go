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

func (s *Server) webRoutes(mux *http.ServeMux) {
	sub, _ := fs.Sub(webFiles, "web")
	files := http.FileServerFS(sub)
	s.handle(mux, "GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
	s.handle(mux, "GET /static/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		http.StripPrefix("/static/", files).ServeHTTP(w, r)
	})
}
