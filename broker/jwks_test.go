package broker

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"

	"github.com/ctibroker/ctibroker/protocol"
)

// jwksServer is a real HTTP server publishing a JSON Web Key Set, as an
// identity provider (Keycloak, Okta, Azure AD) does; its keys can rotate.
type jwksServer struct {
	*httptest.Server
	mu       sync.Mutex
	keys     []jwkset.JWKMarshal
	requests int
}

func newJWKSServer(t *testing.T) *jwksServer {
	t.Helper()
	s := &jwksServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.requests++
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(jwkset.JWKSMarshal{Keys: s.keys})
	}))
	t.Cleanup(s.Close)
	return s
}

// publish replaces the published keys (public parts).
func (s *jwksServer) publish(t *testing.T, keys map[string]any) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = nil
	for kid, k := range keys {
		jwk, err := jwkset.NewJWKFromKey(k, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid, USE: jwkset.UseSig}})
		if err != nil {
			t.Fatal(err)
		}
		s.keys = append(s.keys, jwk.Marshal())
	}
}

// sign makes a token as the identity provider does.
func sign(t *testing.T, method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// idpClaims are claims shaped like Keycloak's: roles nested in
// realm_access.roles among roles the broker does not know, teams in groups.
func idpClaims(sub string, roles, groups []string) jwt.MapClaims {
	return jwt.MapClaims{"sub": sub, "iss": "https://idp.example/realms/cc", "aud": []string{"ctibroker", "account"},
		"exp": time.Now().Add(time.Hour).Unix(), "realm_access": map[string]any{"roles": roles}, "groups": groups}
}

// Enterprise identity: RS256/ES256 tokens verified with the provider's
// JWKS (fetched, cached, refreshed on an unknown kid), role and teams read
// from configurable claims, issuer and audience checked.
func TestHardeningJWKS(t *testing.T) {
	idp := newJWKSServer(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	idp.publish(t, map[string]any{"k1": &rsaKey.PublicKey})
	b := startBroker(t, "CTIBROKER_AUTH__MODE=jwt", "CTIBROKER_AUTH__JWT__JWKSURL="+idp.URL+"/certs",
		"CTIBROKER_AUTH__JWT__ISSUER=https://idp.example/realms/cc", "CTIBROKER_AUTH__JWT__AUDIENCE=ctibroker",
		"CTIBROKER_AUTH__JWT__ROLECLAIM=realm_access.roles", "CTIBROKER_AUTH__JWT__TEAMSCLAIM=groups")

	// A supervisor of sales, by key k1.
	sv := sign(t, jwt.SigningMethodRS256, rsaKey, "k1", idpClaims("vicky", []string{"offline_access", "supervisor"}, []string{"sales"}))
	c, sid := attach(t, b, "access_token="+sv)
	r := c.request(t, protocol.CmdSupervisorSubscribe, sid, map[string]any{"teams": []string{"support"}})
	if f, _ := r["failure"].(map[string]any); r["result"] != "failure" || f["code"] != "FORBIDDEN" {
		t.Fatalf("a supervisor of sales subscribing to support: %v", r)
	}
	if r := c.request(t, protocol.CmdSupervisorSubscribe, sid, map[string]any{}); r["result"] != "success" {
		t.Fatalf("subscribe: %v", r)
	}

	refused := func(what, tok string) {
		t.Helper()
		start := time.Now()
		if _, err := dial(t, b, "access_token="+tok, nil); err == nil || !strings.Contains(err.Error(), "401") {
			t.Errorf("%s: %v, want 401", what, err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("%s: refused after %v (an unknown kid must not stall the handshake)", what, took)
		}
	}
	claims := func(mod func(jwt.MapClaims)) jwt.MapClaims {
		c := idpClaims("alice", []string{"agent"}, []string{"sales"})
		mod(c)
		return c
	}
	refused("wrong issuer", sign(t, jwt.SigningMethodRS256, rsaKey, "k1", claims(func(c jwt.MapClaims) { c["iss"] = "https://evil.example" })))
	refused("no issuer", sign(t, jwt.SigningMethodRS256, rsaKey, "k1", claims(func(c jwt.MapClaims) { delete(c, "iss") })))
	refused("wrong audience", sign(t, jwt.SigningMethodRS256, rsaKey, "k1", claims(func(c jwt.MapClaims) { c["aud"] = "other-app" })))
	refused("exp as a string", sign(t, jwt.SigningMethodRS256, rsaKey, "k1", claims(func(c jwt.MapClaims) { c["exp"] = "9999999999" })))
	refused("unknown role", sign(t, jwt.SigningMethodRS256, rsaKey, "k1", claims(func(c jwt.MapClaims) { c["realm_access"] = map[string]any{"roles": []string{"root"}} })))
	// Algorithm confusion: HS256 "signed" with the public key's bytes.
	pub, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})
	refused("HS256 with the public key as secret", sign(t, jwt.SigningMethodHS256, pemKey, "k1", claims(func(jwt.MapClaims) {})))
	refused("alg none", strings.TrimSuffix(sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "k1", claims(func(jwt.MapClaims) {})), "."))

	// The provider rotates to an EC key: a token with the new kid makes the
	// broker fetch the set again, once.
	idp.publish(t, map[string]any{"k2": &ecKey.PublicKey})
	agent := sign(t, jwt.SigningMethodES256, ecKey, "k2", idpClaims("alice", []string{"agent"}, []string{"sales", "vip"}))
	ac, _ := attach(t, b, "access_token="+agent)
	_ = ac
	// The retired key is no longer accepted, and random kids cost at most
	// one fetch per refresh period.
	idp.mu.Lock()
	before := idp.requests
	idp.mu.Unlock()
	refused("the retired key", sign(t, jwt.SigningMethodRS256, rsaKey, "k1", idpClaims("bob", []string{"agent"}, nil)))
	for i := range 5 {
		refused("an unknown kid", sign(t, jwt.SigningMethodRS256, rsaKey, "random-"+string(rune('a'+i)), idpClaims("bob", []string{"agent"}, nil)))
	}
	idp.mu.Lock()
	after := idp.requests
	idp.mu.Unlock()
	if after-before > 1 {
		t.Fatalf("unknown kids made the broker fetch the JWKS %d times", after-before)
	}
}
