package broker

import (
	"fmt"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// NewLoggers builds the general logger (sampled in json format, so that a
// flood of identical lines cannot swamp the log) and the audit logger for
// state changes, which is never sampled: every change must be in the log.
func NewLoggers(cfg LogConfig) (log, audit *zap.Logger, err error) {
	level, err := zapcore.ParseLevel(cfg.Level)
	if err != nil {
		return nil, nil, fmt.Errorf("log.level: %w", err)
	}
	var zc zap.Config
	if cfg.Format == "console" {
		zc = zap.NewDevelopmentConfig()
		zc.DisableStacktrace = true
		zc.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
	} else {
		zc = zap.NewProductionConfig()
	}
	zc.Level = zap.NewAtomicLevelAt(level)
	if log, err = zc.Build(); err != nil {
		return nil, nil, err
	}
	zc.Sampling = nil
	if audit, err = zc.Build(); err != nil {
		return nil, nil, err
	}
	return log, audit.With(zap.String("log", "audit")), nil
}
