package broker

import (
	"cmp"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/posflag"
	"github.com/knadh/koanf/providers/rawbytes"
	"github.com/knadh/koanf/v2"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/pflag"
	"go.uber.org/zap/zapcore"
	yamlv3 "go.yaml.in/yaml/v3"

	"github.com/ctibroker/ctibroker/adapters"
	"github.com/ctibroker/ctibroker/protocol"
	"github.com/ctibroker/ctibroker/session"
	"github.com/ctibroker/ctibroker/webhook"
)

// DefaultsYAML holds every configuration key with its default and its
// documentation. It is the one place where defaults and limits live.
//
//go:embed defaults.yaml
var DefaultsYAML []byte

// Config is the broker configuration.
type Config struct {
	Listen      string                       `koanf:"listen"`
	HTTP        HTTPConfig                   `koanf:"http"`
	Auth        AuthConfig                   `koanf:"auth"`
	Log         LogConfig                    `koanf:"log"`
	WS          WSConfig                     `koanf:"ws"`
	Limits      LimitsConfig                 `koanf:"limits"`
	Session     SessionConfig                `koanf:"session"`
	Adapter     AdapterConfig                `koanf:"adapter"`
	ACW         map[string]session.ACWPolicy `koanf:"acw"`
	Capacity    map[string]int               `koanf:"capacity"`
	Supervisor  SupervisorConfig             `koanf:"supervisor"`
	Webhooks    webhook.Config               `koanf:"webhooks"`
	AddressBook AddressBookConfig            `koanf:"addressbook"`
	History     HistoryConfig                `koanf:"history"`
	Debug       DebugConfig                  `koanf:"debug"`
	Admin       AdminConfig                  `koanf:"admin"`
	Shutdown    ShutdownConfig               `koanf:"shutdown"`
	Redis       RedisConfig                  `koanf:"redis"`
	Node        NodeConfig                   `koanf:"node"`
}

// SupervisorConfig configures supervisors' actions.
type SupervisorConfig struct {
	// ReasonCode is the not-ready reason of an action that names none.
	ReasonCode string `koanf:"reasoncode"`
	// QueueInterval: how often a queue's time-based figures alone change
	// for supervisors (counts change at once).
	QueueInterval time.Duration `koanf:"queueinterval"`
}

// RedisConfig configures the shared Redis backend.
type RedisConfig struct {
	URL            string        `koanf:"url"`
	Addrs          []string      `koanf:"addrs"`
	MasterName     string        `koanf:"mastername"`
	Username       string        `koanf:"username"`
	Password       string        `koanf:"password"`
	DB             int           `koanf:"db"`
	Prefix         string        `koanf:"prefix"`
	Timeout        time.Duration `koanf:"timeout"`
	LeaseTTL       time.Duration `koanf:"leasettl"`
	NodeTTL        time.Duration `koanf:"nodettl"`
	SessionTTL     time.Duration `koanf:"sessionttl"`
	HealthInterval time.Duration `koanf:"healthinterval"`
}

// Enabled reports whether Redis is configured.
func (r RedisConfig) Enabled() bool { return r.URL != "" || len(r.Addrs) > 0 }

// NodeConfig identifies this node.
type NodeConfig struct {
	ID string `koanf:"id"`
	// URL is this node's own WebSocket URL (ws:// or wss://): under
	// session.multiconnect share, a connection of an agent whose session
	// this node serves that reached another node is told to come here.
	URL string `koanf:"url"`
}

// Auth modes.
const (
	AuthNone = "none"
	AuthJWT  = "jwt"
)

// AuthConfig configures authentication.
type AuthConfig struct {
	Mode string    `koanf:"mode"`
	JWT  JWTConfig `koanf:"jwt"`
}

// JWTConfig says which tokens are accepted and where the identity is in
// them.
type JWTConfig struct {
	Secret      string        `koanf:"secret"`
	JWKSURL     string        `koanf:"jwksurl"`
	JWKSRefresh time.Duration `koanf:"jwksrefresh"`
	Issuer      string        `koanf:"issuer"`
	Audience    string        `koanf:"audience"`
	RoleClaim   string        `koanf:"roleclaim"`
	TeamsClaim  string        `koanf:"teamsclaim"`
}

// LogConfig configures logging.
type LogConfig struct {
	Level  string `koanf:"level"`
	Format string `koanf:"format"`
}

// WSConfig configures the WebSocket endpoint.
type WSConfig struct {
	Origins      []string      `koanf:"origins"`
	MaxMessage   int64         `koanf:"maxmessage"`
	PingInterval time.Duration `koanf:"pinginterval"`
	PingTimeout  time.Duration `koanf:"pingtimeout"`
	WriteTimeout time.Duration `koanf:"writetimeout"`
}

// HTTPConfig bounds HTTP requests in time and size.
type HTTPConfig struct {
	ReadHeaderTimeout time.Duration `koanf:"readheadertimeout"`
	ReadTimeout       time.Duration `koanf:"readtimeout"`
	WriteTimeout      time.Duration `koanf:"writetimeout"`
	IdleTimeout       time.Duration `koanf:"idletimeout"`
	MaxHeaderBytes    int           `koanf:"maxheaderbytes"`
}

// LimitsConfig holds the per-connection and per-session bounds.
type LimitsConfig struct {
	Connections      int           `koanf:"connections"`
	ConnectionsPerIP int           `koanf:"connectionsperip"`
	Channels         int           `koanf:"channels"`
	Groups           int           `koanf:"groups"`
	SendQueue        int           `koanf:"sendqueue"`
	SendQueueBytes   int           `koanf:"sendqueuebytes"`
	CommandRate      float64       `koanf:"commandrate"`
	CommandBurst     int           `koanf:"commandburst"`
	ConnectRate      float64       `koanf:"connectrate"`
	ConnectBurst     int           `koanf:"connectburst"`
	History          int           `koanf:"history"`
	HistoryTTL       time.Duration `koanf:"historyttl"`
	Timeline         int           `koanf:"timeline"`
	RequestIDs       int           `koanf:"requestids"`
	UpgradesPerCPU   int           `koanf:"upgradespercpu"`
	UpgradeWait      time.Duration `koanf:"upgradewait"`
}

// SessionConfig configures session lifetimes and policies.
type SessionConfig struct {
	Grace        time.Duration `koanf:"grace"`
	OnExpire     string        `koanf:"onexpire"`
	MultiConnect string        `koanf:"multiconnect"`
	RequestIDTTL time.Duration `koanf:"requestidttl"`
}

// AdapterConfig selects and bounds the CTI adapter.
type AdapterConfig struct {
	Kind    string        `koanf:"kind"`
	Timeout time.Duration `koanf:"timeout"`
	// Sections are the adapter.<kind> sections, decoded by their kind.
	Sections map[string]any `koanf:",remain"`
	// Settings is the selected kind's decoded, validated configuration.
	Settings any `koanf:"-"`
}

// AddressBookConfig configures the live address book.
type AddressBookConfig struct {
	Interval          time.Duration `koanf:"interval"`
	DefaultHandleTime time.Duration `koanf:"defaulthandletime"`
}

// HistoryConfig bounds the status history.
type HistoryConfig struct {
	Retention time.Duration `koanf:"retention"`
	Sessions  int           `koanf:"sessions"`
}

// AdminConfig configures the operators' listener.
type AdminConfig struct {
	Listen string `koanf:"listen"`
}

// DebugConfig configures the profiling listener.
type DebugConfig struct {
	Listen string `koanf:"listen"`
}

// ShutdownConfig configures graceful shutdown.
type ShutdownConfig struct {
	Timeout time.Duration `koanf:"timeout"`
}

// EnvPrefix prefixes every environment variable the broker reads.
const EnvPrefix = "CTIBROKER_"

// configFlags maps the command-line flags that override configuration keys
// to their keys.
var configFlags = map[string]string{
	"listen":     "listen",
	"log-level":  "log.level",
	"log-format": "log.format",
	"auth-mode":  "auth.mode",
}

// Flags defines --config and the flags that override configuration keys.
func Flags(fs *pflag.FlagSet) {
	fs.String("config", "", "YAML configuration file")
	fs.String("listen", "", "address to listen on (listen)")
	fs.String("log-level", "", "log level: debug, info, warn, error (log.level)")
	fs.String("log-format", "", "log format: json or console (log.format)")
	fs.String("auth-mode", "", "authentication: none or jwt (auth.mode)")
}

// LoadConfig reads defaults, the --config file, the environment (environ,
// as from os.Environ) and the flags, in increasing precedence, and validates
// the result. Errors are one line naming the offending key.
func LoadConfig(fs *pflag.FlagSet, environ []string) (Config, error) {
	k, err := loadKoanf(fs, environ)
	if err != nil {
		return Config{}, err
	}
	var cfg Config
	if err := decode(k.Raw(), &cfg); err != nil {
		return Config{}, fmt.Errorf("config: %s", decodeErrorLine(err))
	}
	if err := cfg.decodeAdapters(); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return cfg, nil
}

// PrintConfig writes the effective configuration (defaults, file,
// environment and flags merged) as YAML, after checking it as LoadConfig
// does. Secrets are masked: keys named secret, password or token, and the
// password in redis.url.
func PrintConfig(w io.Writer, fs *pflag.FlagSet, environ []string) error {
	if _, err := LoadConfig(fs, environ); err != nil {
		return err
	}
	k, err := loadKoanf(fs, environ)
	if err != nil {
		return err
	}
	raw := k.Raw()
	maskSecrets(raw)
	out, err := yamlv3.Marshal(raw)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	_, err = w.Write(out)
	return err
}

// maskSecrets replaces secret values in a configuration map, in place.
func maskSecrets(m map[string]any) {
	for key, v := range m {
		switch v := v.(type) {
		case map[string]any:
			maskSecrets(v)
		case string:
			lower := strings.ToLower(key)
			switch {
			case v == "":
			case strings.Contains(lower, "secret"), strings.Contains(lower, "password"), strings.Contains(lower, "token"):
				m[key] = "*****"
			case lower == "url":
				if u, err := url.Parse(v); err == nil && u.User != nil {
					if _, has := u.User.Password(); has {
						u.User = url.UserPassword(u.User.Username(), "*****")
						m[key] = u.String()
					}
				}
			}
		}
	}
}

// loadKoanf merges defaults, the --config file, the environment and the
// flags, in increasing precedence.
func loadKoanf(fs *pflag.FlagSet, environ []string) (*koanf.Koanf, error) {
	k := koanf.New(".")
	if err := k.Load(rawbytes.Provider(DefaultsYAML), yaml.Parser()); err != nil {
		return nil, fmt.Errorf("config: built-in defaults: %w", err)
	}
	if path, _ := fs.GetString("config"); path != "" {
		if err := k.Load(file.Provider(path), yaml.Parser()); err != nil {
			return nil, fmt.Errorf("config: %s: %w", path, err)
		}
	}
	if err := k.Load(env.Provider(".", env.Opt{
		Prefix:      EnvPrefix,
		EnvironFunc: func() []string { return environ },
		TransformFunc: func(key, value string) (string, any) {
			key = strings.ToLower(strings.TrimPrefix(key, EnvPrefix))
			return strings.ReplaceAll(key, "__", "."), value
		},
	}), nil); err != nil {
		return nil, fmt.Errorf("config: environment: %w", err)
	}
	// posflag with the koanf instance: flags the user did not set do not
	// override the file or the environment.
	if err := k.Load(posflag.ProviderWithFlag(fs, ".", k, func(f *pflag.Flag) (string, any) {
		key, ok := configFlags[f.Name]
		if !ok || !f.Changed {
			return "", nil
		}
		return key, posflag.FlagVal(fs, f)
	}), nil); err != nil {
		return nil, fmt.Errorf("config: flags: %w", err)
	}
	for _, key := range k.Keys() {
		if !knownKey(reflect.TypeOf(Config{}), strings.Split(key, ".")) {
			return nil, fmt.Errorf("config: unknown key %q", key)
		}
	}
	return k, nil
}

// decode decodes a configuration map into out: strict durations, lists from
// comma-separated strings, unknown keys are errors.
func decode(in any, out any) error {
	d, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			durationHook,
			mapstructure.StringToSliceHookFunc(",")),
		WeaklyTypedInput: true,
		ErrorUnused:      true,
		TagName:          "koanf",
		Result:           out,
	})
	if err != nil {
		return err
	}
	return d.Decode(in)
}

// decodeAdapters decodes every adapter.<kind> section with its kind (an
// unknown kind is an error) and validates the selected kind's.
func (c *Config) decodeAdapters() error {
	env := c.adapterEnv()
	kind, ok := adapters.Lookup(c.Adapter.Kind)
	if !ok {
		return fmt.Errorf("adapter.kind: %q is not one of %s", c.Adapter.Kind, strings.Join(adapters.Kinds(), ", "))
	}
	for name, section := range c.Adapter.Sections {
		k, ok := adapters.Lookup(name)
		if !ok {
			return fmt.Errorf("adapter.%s: no adapter of that kind is compiled in (%s)", name, strings.Join(adapters.Kinds(), ", "))
		}
		settings := k.Config()
		if err := decode(section, settings); err != nil {
			return fmt.Errorf("adapter.%s.%s", name, strings.TrimPrefix(decodeErrorLine(err), ": "))
		}
		if name != c.Adapter.Kind {
			continue
		}
		if err := k.Validate(settings, env); err != nil {
			return fmt.Errorf("adapter.%s.%w", name, err)
		}
		c.Adapter.Settings = settings
	}
	if c.Adapter.Settings == nil {
		c.Adapter.Settings = kind.Config()
		if err := kind.Validate(c.Adapter.Settings, env); err != nil {
			return fmt.Errorf("adapter.%s.%w", c.Adapter.Kind, err)
		}
	}
	return nil
}

// durationHook decodes durations from strings with a unit only: a bare
// number (YAML "grace: 120") would otherwise decode as 120 nanoseconds.
func durationHook(_ reflect.Type, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeFor[time.Duration]() {
		return data, nil
	}
	switch v := data.(type) {
	case string:
		d, err := time.ParseDuration(v)
		if err != nil {
			return nil, fmt.Errorf("%q is not a duration: give a unit, like 30s or 2m", v)
		}
		return d, nil
	case time.Duration:
		return v, nil
	default:
		return nil, fmt.Errorf("%v is not a duration: give a unit, like 30s or 2m", v)
	}
}

// knownKey reports whether a flattened koanf key names a field of t. Map
// fields accept any key at their level; list values are checked by the decoder.
func knownKey(t reflect.Type, parts []string) bool {
	for len(parts) > 0 {
		switch t.Kind() {
		case reflect.Map:
			t, parts = t.Elem(), parts[1:]
			continue
		case reflect.Struct:
		default:
			return false
		}
		found := false
		for i := range t.NumField() {
			f := t.Field(i)
			if f.Tag.Get("koanf") == ",remain" {
				return true // a section decoded on its own (adapter.<kind>)
			}
			if strings.EqualFold(f.Tag.Get("koanf"), parts[0]) || (f.Tag.Get("koanf") == "" && strings.EqualFold(f.Name, parts[0])) {
				t, parts, found = f.Type, parts[1:], true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

var (
	decodeErrRe = regexp.MustCompile(`'([^']*)'`)
	// mapKeyRe finds map keys in mapstructure's names (acw[chat].timeout),
	// which the file writes acw.chat.timeout; list indexes stay ([0]).
	mapKeyRe = regexp.MustCompile(`\[([^\]0-9][^\]]*)\]`)
)

// decodeErrorLine turns mapstructure's multi-line error into one line that
// names the key.
func decodeErrorLine(err error) string {
	lines := strings.Split(err.Error(), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(lines[i]), "*"))
		if l == "" || strings.HasPrefix(l, "decoding failed") {
			continue
		}
		if m := decodeErrRe.FindStringSubmatch(l); m != nil && m[1] != "" {
			rest := strings.TrimSpace(strings.Replace(l, m[0], "", 1))
			rest = strings.TrimPrefix(rest, "error decoding")
			return fmt.Sprintf("%s: %s", mapKeyRe.ReplaceAllString(m[1], ".$1"), strings.TrimLeft(strings.TrimSpace(rest), ": "))
		}
		return l
	}
	return err.Error()
}

// Validate checks values the decoder cannot.
func (c Config) Validate() error {
	oneOf := func(key, v string, allowed ...string) error {
		if !slices.Contains(allowed, v) {
			return fmt.Errorf("%s: %q is not one of %s", key, v, strings.Join(allowed, ", "))
		}
		return nil
	}
	positive := map[string]float64{
		"ws.maxmessage": float64(c.WS.MaxMessage), "limits.sendqueue": float64(c.Limits.SendQueue),
		"limits.sendqueuebytes": float64(c.Limits.SendQueueBytes), "limits.connections": float64(c.Limits.Connections),
		"limits.channels": float64(c.Limits.Channels), "limits.groups": float64(c.Limits.Groups),
		"http.readheadertimeout": float64(c.HTTP.ReadHeaderTimeout), "http.readtimeout": float64(c.HTTP.ReadTimeout),
		"http.writetimeout": float64(c.HTTP.WriteTimeout), "http.idletimeout": float64(c.HTTP.IdleTimeout),
		"http.maxheaderbytes": float64(c.HTTP.MaxHeaderBytes),
		"limits.history":      float64(c.Limits.History),
		"limits.timeline":     float64(c.Limits.Timeline), "limits.requestids": float64(c.Limits.RequestIDs),
		"ws.pinginterval": float64(c.WS.PingInterval), "ws.pingtimeout": float64(c.WS.PingTimeout),
		"ws.writetimeout": float64(c.WS.WriteTimeout), "session.grace": float64(c.Session.Grace),
		"session.requestidttl": float64(c.Session.RequestIDTTL), "adapter.timeout": float64(c.Adapter.Timeout),
		"shutdown.timeout": float64(c.Shutdown.Timeout), "addressbook.defaulthandletime": float64(c.AddressBook.DefaultHandleTime),
		"redis.timeout": float64(c.Redis.Timeout), "redis.leasettl": float64(c.Redis.LeaseTTL), "redis.nodettl": float64(c.Redis.NodeTTL),
		"redis.sessionttl": float64(c.Redis.SessionTTL), "redis.healthinterval": float64(c.Redis.HealthInterval),
		"history.retention": float64(c.History.Retention), "history.sessions": float64(c.History.Sessions),
		"supervisor.queueinterval": float64(c.Supervisor.QueueInterval),
	}
	keys := make([]string, 0, len(positive))
	for k := range positive {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if positive[k] <= 0 {
			return fmt.Errorf("%s: must be positive", k)
		}
	}
	if c.Limits.HistoryTTL < 0 {
		return errors.New("limits.historyttl: must not be negative")
	}
	if c.Limits.HistoryTTL > 0 && c.Limits.HistoryTTL < c.resumeWindow() {
		return fmt.Errorf("limits.historyttl: must be at least session.grace + ws.pinginterval + ws.pingtimeout (%s): "+
			"a resuming agent may have missed events that old", c.resumeWindow())
	}
	if c.Node.URL != "" {
		if u, err := url.Parse(c.Node.URL); err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" || len(c.Node.URL) > protocol.MaxCloseReason {
			return fmt.Errorf("node.url: %q is not a ws:// or wss:// URL of at most %d bytes", c.Node.URL, protocol.MaxCloseReason)
		}
	}
	if c.Limits.ConnectionsPerIP < 0 {
		return errors.New("limits.connectionsperip: must not be negative (0: no per-address cap)")
	}
	if c.Limits.CommandRate < 0 || c.Limits.CommandBurst < 0 {
		return errors.New("limits.commandrate: must not be negative")
	}
	if c.Limits.ConnectRate < 0 || c.Limits.ConnectBurst < 0 {
		return errors.New("limits.connectrate: must not be negative (0: no limit)")
	}
	if c.Limits.ConnectRate > 0 && c.Limits.ConnectBurst < 1 {
		return errors.New("limits.connectburst: must be at least 1 when limits.connectrate is set")
	}
	if c.Limits.UpgradesPerCPU < 0 {
		return errors.New("limits.upgradespercpu: must not be negative (0: no pacing)")
	}
	if c.Limits.UpgradesPerCPU > 0 && c.Limits.UpgradeWait <= 0 {
		return errors.New("limits.upgradewait: must be positive when limits.upgradespercpu is set")
	}
	if c.Limits.CommandRate > 0 && c.Limits.CommandBurst < 1 {
		return errors.New("limits.commandburst: must be at least 1 when limits.commandrate is set")
	}
	if err := c.Webhooks.Validate(); err != nil {
		return err
	}
	checks := []error{
		oneOf("auth.mode", c.Auth.Mode, AuthNone, AuthJWT),
		oneOf("log.format", c.Log.Format, "json", "console"),
		oneOf("session.onexpire", c.Session.OnExpire, session.OnExpireDeactivate, session.OnExpireKeep),
		oneOf("session.multiconnect", c.Session.MultiConnect, session.MultiConnectTakeover, session.MultiConnectReject, session.MultiConnectShare),
	}
	for _, err := range checks {
		if err != nil {
			return err
		}
	}
	if _, err := zapcore.ParseLevel(c.Log.Level); err != nil {
		return fmt.Errorf("log.level: %q is not one of debug, info, warn, error", c.Log.Level)
	}
	for typ, p := range c.ACW {
		if p.Then != "" { // empty: ready
			if err := oneOf("acw."+typ+".then", p.Then, session.ACWThenReady, session.ACWThenPrevious); err != nil {
				return err
			}
		}
		if p.Timeout < 0 {
			return fmt.Errorf("acw.%s.timeout: must not be negative", typ)
		}
		if p.Disposition != "" { // empty: none
			if err := oneOf("acw."+typ+".disposition", p.Disposition, session.DispositionNone, session.DispositionOptional, session.DispositionRequired); err != nil {
				return err
			}
		}
	}
	for typ, n := range c.Capacity {
		if n < 1 || n > protocol.MaxInteractions {
			return fmt.Errorf("capacity.%s: %d is not between 1 and %d", typ, n, protocol.MaxInteractions)
		}
	}
	if c.Redis.NodeTTL > c.Redis.LeaseTTL {
		return errors.New("redis.nodettl: must not be longer than redis.leasettl")
	}
	if c.Redis.URL != "" && len(c.Redis.Addrs) > 0 {
		return errors.New("redis.url: set either redis.url or redis.addrs, not both")
	}
	if c.Redis.URL != "" {
		if _, err := redis.ParseURL(c.Redis.URL); err != nil {
			return fmt.Errorf("redis.url: %v", err)
		}
	}
	if c.Admin.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Admin.Listen); err != nil {
			return fmt.Errorf("admin.listen: %q is not host:port: %v", c.Admin.Listen, err)
		}
	}
	if c.Debug.Listen != "" {
		dhost, _, err := net.SplitHostPort(c.Debug.Listen)
		if err != nil || !isLoopback(dhost) {
			return fmt.Errorf("debug.listen: %q must be a loopback host:port", c.Debug.Listen)
		}
	}
	if c.Node.ID != "" {
		if err := protocol.ValidateID(c.Node.ID); err != nil {
			return fmt.Errorf("node.id: %v", err)
		}
	}
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("listen: %q is not host:port: %v", c.Listen, err)
	}
	switch c.Auth.Mode {
	case AuthJWT:
		j := c.Auth.JWT
		if j.Secret == "" && j.JWKSURL == "" {
			return errors.New("auth.jwt.secret: required when auth.mode is jwt, unless auth.jwt.jwksurl is set (set CTIBROKER_AUTH__JWT__SECRET)")
		}
		if j.Secret != "" && len(j.Secret) < protocol.MinSecretLength {
			return fmt.Errorf("auth.jwt.secret: must be at least %d bytes for HS256", protocol.MinSecretLength)
		}
		if j.JWKSURL != "" {
			u, err := url.Parse(j.JWKSURL)
			if err != nil || !(u.Scheme == "https" || u.Scheme == "http" && isLoopback(u.Hostname())) || u.Host == "" {
				return fmt.Errorf("auth.jwt.jwksurl: %q must be an https URL (http only on loopback)", j.JWKSURL)
			}
			if j.JWKSRefresh < time.Minute {
				return errors.New("auth.jwt.jwksrefresh: must be at least 1m")
			}
		}
		for key, path := range map[string]string{"auth.jwt.roleclaim": j.RoleClaim, "auth.jwt.teamsclaim": j.TeamsClaim} {
			if path == "" || slices.Contains(strings.Split(path, "."), "") {
				return fmt.Errorf("%s: %q is not a claim name or dotted path", key, path)
			}
		}
	case AuthNone:
		if !isLoopback(host) {
			return fmt.Errorf("auth.mode: none is only allowed on a loopback listen address, not %q", c.Listen)
		}
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// adapterEnv is what adapters are told of the broker's setting.
func (c Config) adapterEnv() adapters.Env {
	return adapters.Env{Authenticated: c.Auth.Mode == AuthJWT, Capacity: c.capacity(), Node: c.Node.ID, Timeout: c.Adapter.Timeout}
}

// capacity is capacity.<type> keyed by upper-case type.
func (c Config) capacity() map[string]int {
	out := make(map[string]int, len(c.Capacity))
	for k, v := range c.Capacity {
		out[strings.ToUpper(k)] = v
	}
	return out
}

// SessionOptions maps the configuration to session options.
func (c Config) SessionOptions() session.Options {
	acw := map[string]session.ACWPolicy{}
	for k, v := range c.ACW {
		acw[strings.ToLower(k)] = v
	}
	return session.Options{
		Grace: c.Session.Grace, OnExpire: c.Session.OnExpire, MultiConnect: c.Session.MultiConnect,
		HistorySize: c.Limits.History, TimelineSize: c.Limits.Timeline,
		MaxChannels: c.Limits.Channels, MaxGroups: c.Limits.Groups,
		CommandRate: c.Limits.CommandRate, CommandBurst: c.Limits.CommandBurst,
		ConnectRate: c.Limits.ConnectRate, ConnectBurst: c.Limits.ConnectBurst,
		AdapterTimeout: c.Adapter.Timeout, RequestIDTTL: c.Session.RequestIDTTL, RequestIDLimit: c.Limits.RequestIDs,
		ACW: acw, Capacity: c.capacity(), SupervisorReason: cmp.Or(c.Supervisor.ReasonCode, protocol.ReasonSupervisor), AddressBookInterval: c.AddressBook.Interval, DefaultHandleTime: c.AddressBook.DefaultHandleTime,
		Node: c.Node.ID, URL: c.Node.URL, LeaseTTL: c.Redis.LeaseTTL, NodeTTL: c.Redis.NodeTTL, StoreTimeout: c.Redis.Timeout, HealthInterval: c.Redis.HealthInterval,
		QueueInterval: c.Supervisor.QueueInterval,
	}
}

// resumeWindow is the age of the oldest event a resuming agent can have
// missed: its connection may have been dead for a ping interval and timeout
// before the broker noticed, and the session then waits for it for the
// grace period.
func (c Config) resumeWindow() time.Duration {
	return c.Session.Grace + c.WS.PingInterval + c.WS.PingTimeout
}

// ReplayTTL is how long the in-process store keeps events for replay:
// limits.historyttl, or by default the resume window.
func (c Config) ReplayTTL() time.Duration {
	if c.Limits.HistoryTTL > 0 {
		return c.Limits.HistoryTTL
	}
	return c.resumeWindow()
}
