//go:build !unix

package broker

// connectionCap returns limits.connections (no file limit to fit in).
func (s *Server) connectionCap() int { return s.cfg.Limits.Connections }
