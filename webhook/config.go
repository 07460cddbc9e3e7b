// Package webhook pushes agent status changes and interaction events to
// back offices' HTTP endpoints, signed, at least once, in order per agent
// per endpoint.
//
// Sessions hand what they committed to the Dispatcher (Push, never
// blocking). A relay appends each message to one of Partitions outbox
// streams (by agent: an agent's messages stay in order), in Redis when it
// is configured, in memory otherwise. Each partition is leased by one live
// node, which delivers its messages to every endpoint in order, with its
// own cursor per endpoint: a message is retried (exponential backoff with
// jitter) until the endpoint acknowledges it (2xx) or it is older than
// MaxAge (then dead-lettered). A node that dies leaves its partitions to
// another node after the lease (LeaseTTL), which starts from the stored
// cursors: the message in flight may be delivered twice, with the same id.
package webhook

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/ctibroker/ctibroker/protocol"
)

// Signature schemes.
const (
	SignHMAC = "hmac-sha256"
	SignMD5  = "legacy-md5"
)

// Config is the webhooks section.
type Config struct {
	Endpoints []Endpoint `koanf:"endpoints"`
	// MaxAge: a message not acknowledged by then is dead-lettered.
	MaxAge time.Duration `koanf:"maxage"`
	// Timeout bounds one delivery attempt.
	Timeout time.Duration `koanf:"timeout"`
	// Partitions: outbox streams; an endpoint gets at most this many
	// deliveries at once (one per partition).
	Partitions int `koanf:"partitions"`
	// RetryMin and RetryMax bound the backoff between attempts.
	RetryMin time.Duration `koanf:"retrymin"`
	RetryMax time.Duration `koanf:"retrymax"`
	// LeaseTTL: how long a dead node keeps its partitions.
	LeaseTTL time.Duration `koanf:"leasettl"`
}

// Endpoint is one receiver.
type Endpoint struct {
	Name string `koanf:"name"`
	URL  string `koanf:"url"`
	// Secret: for hmac-sha256, "whsec_" and the base64 of at least 24
	// random bytes (the Standard Webhooks form); for legacy-md5, the app
	// key.
	Secret string `koanf:"secret"`
	// Events: patterns of message types ("agent.status", "interaction.*",
	// "*").
	Events []string `koanf:"events"`
	// Teams: only agents of these teams (empty: all).
	Teams     []string `koanf:"teams"`
	Signature string   `koanf:"signature"`
	// CompanyID: legacy-md5's company id.
	CompanyID string `koanf:"companyid"`
}

// MinSecretBytes is the least key a hmac-sha256 endpoint may have.
const MinSecretBytes = 24

// Validate checks the configuration; errors name the key.
func (c Config) Validate() error {
	if len(c.Endpoints) == 0 {
		return nil
	}
	switch {
	case c.MaxAge <= 0:
		return errors.New("webhooks.maxage: must be positive")
	case c.Timeout <= 0:
		return errors.New("webhooks.timeout: must be positive")
	case c.Partitions < 1 || c.Partitions > protocol.MaxWebhookPartitions:
		return fmt.Errorf("webhooks.partitions: 1 to %d", protocol.MaxWebhookPartitions)
	case c.RetryMin <= 0 || c.RetryMax < c.RetryMin:
		return errors.New("webhooks.retrymin, webhooks.retrymax: positive, retrymin <= retrymax")
	case c.LeaseTTL <= 0:
		return errors.New("webhooks.leasettl: must be positive")
	case len(c.Endpoints) > protocol.MaxWebhookEndpoints:
		return fmt.Errorf("webhooks.endpoints: at most %d", protocol.MaxWebhookEndpoints)
	}
	seen := map[string]bool{}
	for i, e := range c.Endpoints {
		key := fmt.Sprintf("webhooks.endpoints[%d]", i)
		if protocol.ValidateID(e.Name) != nil || seen[e.Name] {
			return fmt.Errorf("%s.name: required, unique, an id (letters, digits, - and _)", key)
		}
		seen[e.Name] = true
		u, err := url.Parse(e.URL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
			return fmt.Errorf("%s.url: an http:// or https:// URL without credentials", key)
		}
		switch e.Signature {
		case SignHMAC, "":
			raw, ok := strings.CutPrefix(e.Secret, "whsec_")
			key2, err := base64.StdEncoding.DecodeString(raw)
			if !ok || err != nil || len(key2) < MinSecretBytes {
				return fmt.Errorf("%s.secret: \"whsec_\" and the base64 of at least %d random bytes (ctibroker webhook secret makes one)", key, MinSecretBytes)
			}
		case SignMD5:
			if len(e.Secret) < 16 || e.CompanyID == "" {
				return fmt.Errorf("%s: legacy-md5 needs secret (the app key, at least 16 bytes) and companyid", key)
			}
		default:
			return fmt.Errorf("%s.signature: %q is neither %s nor %s", key, e.Signature, SignHMAC, SignMD5)
		}
		if len(e.Events) == 0 {
			return fmt.Errorf("%s.events: at least one pattern (\"*\" for all)", key)
		}
		for _, p := range e.Events {
			if _, err := path.Match(p, "x"); err != nil {
				return fmt.Errorf("%s.events: %q: %v", key, p, err)
			}
		}
	}
	return nil
}

// NewSecret returns a fresh hmac-sha256 secret in the Standard Webhooks
// form.
func NewSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return "whsec_" + base64.StdEncoding.EncodeToString(b)
}

// wants reports whether the endpoint takes a message of this type about an
// agent of these teams.
func (e *Endpoint) wants(typ string, teams []string) bool {
	if len(e.Teams) > 0 && !hasAny(e.Teams, teams) {
		return false
	}
	for _, p := range e.Events {
		if ok, _ := path.Match(p, typ); ok || p == "*" {
			return true
		}
		// "interaction.*" also takes "interaction.party.added".
		if prefix, ok := strings.CutSuffix(p, ".*"); ok && strings.HasPrefix(typ, prefix+".") {
			return true
		}
	}
	return false
}

func hasAny(a, b []string) bool {
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return true
			}
		}
	}
	return false
}
