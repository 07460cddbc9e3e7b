package broker

import (
	"embed"
	"io/fs"
	"net/http"
)

// The supervisor wallboard and the agent desktop: static files embedded in
// the binary. They talk to the broker over the public protocol only. The
// desktop runs on the TypeScript client, whose build is copied into
// web/lib (a test checks it is the current one).
//
//go:embed web
var webFiles embed.FS

func (s *Server) webRoutes(r *routes) {
	sub, _ := fs.Sub(webFiles, "web")
	files := http.FileServerFS(sub)
	r.handle("GET /{$}", func(w http.ResponseWriter, req *http.Request) {
		pageHeaders(w)
		files.ServeHTTP(w, req)
	})
	// The agent desktop (a softphone bar on the TypeScript client).
	r.handle("GET /agent", func(w http.ResponseWriter, req *http.Request) {
		pageHeaders(w)
		http.ServeFileFS(w, req, sub, "agent.html")
	})
	r.handle("GET /static/", func(w http.ResponseWriter, req *http.Request) {
		pageHeaders(w)
		http.StripPrefix("/static/", files).ServeHTTP(w, req)
	})
}

// pageHeaders: the pages run only their own scripts and styles and talk
// only to the broker, cannot be framed (clickjacking a supervisor), and send
// no Referer (a page URL may have carried a token before the page removed
// it).
func pageHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Cache-Control", "no-cache")
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
}
