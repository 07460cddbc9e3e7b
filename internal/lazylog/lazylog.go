// Package lazylog writes log lines with an object's context fields (a
// connection's agent and address, a session's ids) without building a
// logger for them.
//
// zap's Logger.With clones the encoder, which takes a 1 KiB buffer it never
// gives back, on every call, whether or not the line is then written. Built
// per log line, that was 1 KiB of garbage per line at every attach, even
// with the level off; kept per object, a logger is memory at every idle
// connection. Here the fields are added only to lines that are written.
package lazylog

import (
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Base prepares l for Logger: Logger's methods are two calls away from
// zap's Check, and the logged caller must be the line that logs.
func Base(l *zap.Logger) *zap.Logger { return l.WithOptions(zap.AddCallerSkip(2)) }

// Logger is a base logger (from Base) and the fields of every line.
type Logger struct {
	base   *zap.Logger
	fields [2]zap.Field
}

// New returns a Logger adding a and b to every line written with it.
func New(base *zap.Logger, a, b zap.Field) Logger {
	return Logger{base: base, fields: [2]zap.Field{a, b}}
}

// Debug logs at debug level.
func (l Logger) Debug(msg string, fields ...zap.Field) { l.write(zapcore.DebugLevel, msg, fields) }

// Info logs at info level.
func (l Logger) Info(msg string, fields ...zap.Field) { l.write(zapcore.InfoLevel, msg, fields) }

// Warn logs at warn level.
func (l Logger) Warn(msg string, fields ...zap.Field) { l.write(zapcore.WarnLevel, msg, fields) }

// Error logs at error level.
func (l Logger) Error(msg string, fields ...zap.Field) { l.write(zapcore.ErrorLevel, msg, fields) }

func (l Logger) write(level zapcore.Level, msg string, fields []zap.Field) {
	ce := l.base.Check(level, msg)
	if ce == nil {
		return
	}
	all := make([]zap.Field, 0, len(l.fields)+len(fields))
	all = append(append(all, l.fields[:]...), fields...)
	ce.Write(all...)
}
