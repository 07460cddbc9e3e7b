package broker

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/rawbytes"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"

	"github.com/ctibroker/ctibroker/adapters"
	"github.com/ctibroker/ctibroker/adapters/sim"
)

func loadTB(tb testing.TB, yaml string, env []string, args ...string) (Config, error) {
	tb.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	Flags(fs)
	if yaml != "" {
		path := filepath.Join(tb.TempDir(), "c.yaml")
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			tb.Fatal(err)
		}
		args = append(args, "--config", path)
	}
	if err := fs.Parse(args); err != nil {
		tb.Fatal(err)
	}
	return LoadConfig(fs, env)
}

func TestConfigDefaults(t *testing.T) {
	cfg, err := loadTB(t, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:8080" || cfg.Auth.Mode != AuthNone || cfg.Session.Grace != 2*time.Minute ||
		cfg.WS.MaxMessage != 65536 || cfg.Adapter.Timeout != 5*time.Second || cfg.Session.MultiConnect != "takeover" {
		t.Fatalf("defaults: %+v", cfg)
	}
	simCfg := cfg.Adapter.Settings.(*sim.Config)
	if len(simCfg.NotReadyReasons) == 0 || len(simCfg.AddressBooks) == 0 {
		t.Fatal("simulated switch has no demo catalogs")
	}
	if got := simCfg.AddressBooks[0].Entries[1].Properties.AgentID; got != "alice" {
		t.Fatalf("address book agent entry decoded agentId %q", got)
	}
}

func TestConfigPrecedence(t *testing.T) {
	secret := strings.Repeat("s", 32)
	tests := []struct {
		name  string
		yaml  string
		env   []string
		args  []string
		check func(Config) bool
	}{
		{"file over defaults", "session:\n  grace: 30s\n", nil, nil, func(c Config) bool { return c.Session.Grace == 30*time.Second }},
		{"env over file", "log:\n  level: warn\n", []string{"CTIBROKER_LOG__LEVEL=debug"}, nil, func(c Config) bool { return c.Log.Level == "debug" }},
		{"flag over env", "", []string{"CTIBROKER_LISTEN=127.0.0.1:9000"}, []string{"--listen", "127.0.0.1:9001"}, func(c Config) bool { return c.Listen == "127.0.0.1:9001" }},
		{"unset flag keeps env", "", []string{"CTIBROKER_LISTEN=127.0.0.1:9000"}, nil, func(c Config) bool { return c.Listen == "127.0.0.1:9000" }},
		{"unset flag keeps file", "log:\n  format: console\n", nil, []string{"--log-level", "warn"}, func(c Config) bool { return c.Log.Format == "console" && c.Log.Level == "warn" }},
		{"nested env", "", []string{"CTIBROKER_AUTH__MODE=jwt", "CTIBROKER_AUTH__JWT__SECRET=" + secret}, nil, func(c Config) bool { return c.Auth.Mode == "jwt" && c.Auth.JWT.Secret == secret }},
		{"env ignores other prefixes", "", []string{"HOME=/root", "CTIBROKERX=1"}, nil, func(c Config) bool { return c.Listen == "127.0.0.1:8080" }},
		{"acw per type", "acw:\n  telephony:\n    timeout: 20s\n    auto: true\n    then: previous\n", nil, nil, func(c Config) bool {
			p := c.SessionOptions().ACW["telephony"]
			return p.Timeout == 20*time.Second && p.Auto && p.Then == "previous"
		}},
		{"sim agents", "adapter:\n  sim:\n    agents:\n      alice:\n        teams: [sales]\n        logins:\n          - {id: phone, name: \"1001\", type: TELEPHONY, status: ready}\n", nil, nil, func(c Config) bool {
			s := c.Adapter.Settings.(*sim.Config)
			return len(s.Agents["alice"].Logins) == 1 && s.Agents["alice"].Teams[0] == "sales"
		}},
		{"replay ttl follows the resume window", "session:\n  grace: 5m\n", nil, nil, func(c Config) bool {
			return c.ReplayTTL() == 5*time.Minute+c.WS.PingInterval+c.WS.PingTimeout
		}},
		{"replay ttl set", "limits:\n  historyttl: 1h\n", nil, nil, func(c Config) bool { return c.ReplayTTL() == time.Hour }},
		{"origins from env list", "", []string{"CTIBROKER_WS__ORIGINS=a.example.com,b.example.com"}, nil, func(c Config) bool { return len(c.WS.Origins) == 2 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := loadTB(t, tt.yaml, tt.env, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(cfg) {
				t.Fatalf("unexpected config: %+v", cfg)
			}
		})
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	tests := []struct {
		name, yaml string
		env        []string
		want       string
	}{
		{"unknown key", "sesion:\n  grace: 1m\n", nil, `unknown key "sesion.grace"`},
		{"unknown nested key", "session:\n  graze: 1m\n", nil, `unknown key "session.graze"`},
		{"unknown env key", "", []string{"CTIBROKER_SESSION__GRAZE=1m"}, `unknown key "session.graze"`},
		{"bad duration", "session:\n  grace: soon\n", nil, "session.grace"},
		{"duration without unit", "session:\n  grace: 120\n", nil, "session.grace"},
		{"duration without unit, float", "adapter:\n  timeout: 2.5\n", nil, "adapter.timeout"},
		{"duration without unit, env", "", []string{"CTIBROKER_SESSION__GRACE=120"}, "session.grace"},
		{"duration without unit, nested", "acw:\n  chat:\n    timeout: 30\n", nil, "acw.chat.timeout"},
		{"bad duration env", "", []string{"CTIBROKER_ADAPTER__TIMEOUT=5 seconds"}, "adapter.timeout"},
		{"bad number", "limits:\n  sendqueue: lots\n", nil, "limits.sendqueue"},
		{"unknown key in list", "adapter:\n  sim:\n    notreadyreasons:\n      - {id: x, colour: red}\n", nil, "colour"},
		{"unknown adapter key", "adapter:\n  sim:\n    latncy: 1s\n", nil, "adapter.sim"},
		{"unknown adapter kind", "adapter:\n  kind: pbx\n", nil, "adapter.kind"},
		{"unknown adapter section", "adapter:\n  pbx:\n    host: x\n", nil, "adapter.pbx"},
		{"adapter duration without unit", "adapter:\n  sim:\n    latency: 5\n", nil, "adapter.sim.latency"},
		{"jwt without secret", "auth:\n  mode: jwt\n", nil, "auth.jwt.secret"},
		{"short secret", "auth:\n  mode: jwt\n  jwt:\n    secret: short\n", nil, "auth.jwt.secret"},
		{"none off loopback", "listen: 0.0.0.0:8080\n", nil, "auth.mode"},
		{"bad mode", "auth:\n  mode: basic\n", nil, "auth.mode"},
		{"bad level", "log:\n  level: loud\n", nil, "log.level"},
		{"bad policy", "session:\n  multiconnect: both\n", nil, "session.multiconnect"},
		{"bad acw then", "acw:\n  chat:\n    then: later\n", nil, "acw.chat.then"},
		{"zero grace", "session:\n  grace: 0s\n", nil, "session.grace"},
		{"bad listen", "listen: nowhere\n", nil, "listen"},
		{"fail rate", "adapter:\n  sim:\n    failrate: 2\n", nil, "adapter.sim.failrate"},
		{"public pprof", "debug:\n  listen: 0.0.0.0:6060\n", nil, "debug.listen"},
		{"replay shorter than a resume", "limits:\n  historyttl: 1m\n", nil, "limits.historyttl"},
		{"negative replay ttl", "limits:\n  historyttl: -1s\n", nil, "limits.historyttl"},
		{"negative upgrade pace", "limits:\n  upgradespercpu: -1\n", nil, "limits.upgradespercpu"},
		{"paced upgrades that never wait", "limits:\n  upgradewait: 0s\n", nil, "limits.upgradewait"},
		{"negative connect rate", "limits:\n  connectrate: -1\n", nil, "limits.connectrate"},
		{"connect rate without a burst", "limits:\n  connectburst: 0\n", nil, "limits.connectburst"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadTB(t, tt.yaml, tt.env)
			if err == nil {
				t.Fatal("config accepted")
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) || strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "config: ") {
				t.Fatalf("error %q: want one line starting with \"config: \" naming %q", msg, tt.want)
			}
		})
	}
}

// Every configuration key, the adapters' included, is in defaults.yaml,
// which is the documented reference with every default.
func TestDefaultsDocumentEveryKey(t *testing.T) {
	k := koanf.New(".")
	if err := k.Load(rawbytes.Provider(DefaultsYAML), yaml.Parser()); err != nil {
		t.Fatal(err)
	}
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			tag := f.Tag.Get("koanf")
			if tag == "" || tag == "-" || strings.HasPrefix(tag, ",") {
				continue
			}
			key := prefix + tag
			if !k.Exists(key) && !strings.Contains(string(DefaultsYAML), " "+tag+": null") {
				t.Errorf("defaults.yaml does not document %q", key)
				continue
			}
			if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[time.Duration]() {
				walk(key+".", f.Type)
			}
		}
	}
	walk("", reflect.TypeFor[Config]())
	for _, name := range adapters.Kinds() {
		kind, _ := adapters.Lookup(name)
		walk("adapter."+name+".", reflect.TypeOf(kind.Config()).Elem())
	}
}
