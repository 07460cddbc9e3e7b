package wsbuf

// ClientFrame is clientFrame for the package's external tests.
var ClientFrame = clientFrame
