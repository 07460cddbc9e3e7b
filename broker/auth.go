package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/ctibroker/ctibroker/protocol"
	"github.com/ctibroker/ctibroker/session"
)

// Roles carried by the JWT role claim.
const (
	RoleAgent      = session.RoleAgent
	RoleSupervisor = session.RoleSupervisor
	RoleAdmin      = session.RoleAdmin
)

// roles in increasing order of rights: a token naming several (an identity
// provider's list of roles) gets the highest.
var roles = []string{RoleAgent, RoleSupervisor, RoleAdmin}

// Claims are the claims of the tokens `ctibroker token` mints.
type Claims struct {
	Role  string   `json:"role"`
	Teams []string `json:"teams,omitempty"`
	jwt.RegisteredClaims
}

// Authenticator turns an HTTP request into an identity.
type Authenticator struct {
	mode       string
	secret     []byte
	keys       keyfunc.Keyfunc // nil without auth.jwt.jwksurl
	parser     *jwt.Parser
	roleClaim  []string // claim path, e.g. realm_access.roles
	teamsClaim []string
}

// NewAuthenticator creates an authenticator for the configured mode. With a
// JWKS URL, the key set is fetched now (a failure is logged, and retried)
// and refreshed in the background until ctx ends.
func NewAuthenticator(ctx context.Context, cfg AuthConfig, log *zap.Logger) (*Authenticator, error) {
	j := cfg.JWT
	a := &Authenticator{mode: cfg.Mode, roleClaim: strings.Split(j.RoleClaim, "."), teamsClaim: strings.Split(j.TeamsClaim, ".")}
	var methods []string
	if j.Secret != "" {
		a.secret = []byte(j.Secret)
		methods = append(methods, jwt.SigningMethodHS256.Alg())
	}
	if j.JWKSURL != "" && cfg.Mode == AuthJWT {
		k, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{j.JWKSURL}, keyfunc.Override{
			Client:            &http.Client{Transport: limitedBody{http.DefaultTransport, protocol.JWKSMaxBytes}},
			HTTPTimeout:       protocol.JWKSTimeoutSeconds * time.Second,
			RefreshInterval:   j.JWKSRefresh,
			RefreshUnknownKID: rate.NewLimiter(rate.Every(protocol.JWKSUnknownKIDSecond*time.Second), 1),
			RateLimitWaitMax:  protocol.JWKSUnknownKIDWaitMs * time.Millisecond,
			RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
				return func(_ context.Context, err error) {
					log.Warn("could not fetch the JWKS; tokens signed with keys not yet known are refused", zap.String("url", u), zap.Error(err))
				}
			},
		})
		if err != nil {
			return nil, fmt.Errorf("auth.jwt.jwksurl: %w", err)
		}
		a.keys = k
		methods = append(methods, jwt.SigningMethodRS256.Alg(), jwt.SigningMethodES256.Alg())
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods(methods), jwt.WithExpirationRequired(), jwt.WithLeeway(5 * time.Second)}
	if j.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(j.Issuer))
	}
	if j.Audience != "" {
		opts = append(opts, jwt.WithAudience(j.Audience))
	}
	a.parser = jwt.NewParser(opts...)
	return a, nil
}

// limitedBody bounds the responses of a transport.
type limitedBody struct {
	http.RoundTripper
	max int64
}

func (l limitedBody) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := l.RoundTripper.RoundTrip(r)
	if err == nil {
		resp.Body = struct {
			io.Reader
			io.Closer
		}{&errLimitReader{r: resp.Body, n: l.max}, resp.Body}
	}
	return resp, err
}

// errLimitReader fails, rather than ending quietly, past its limit: a
// truncated key set must not decode.
type errLimitReader struct {
	r io.Reader
	n int64
}

func (e *errLimitReader) Read(p []byte) (int, error) {
	if e.n <= 0 {
		return 0, fmt.Errorf("response larger than %d bytes", protocol.JWKSMaxBytes)
	}
	p = p[:min(int64(len(p)), e.n)]
	n, err := e.r.Read(p)
	e.n -= int64(n)
	return n, err
}

// key returns the key that verifies t: the secret for HS256, the provider's
// key named by its kid otherwise. The parser has already refused any other
// algorithm, so a token cannot pick its own verification (HS256 "signed"
// with a public key, alg none).
func (a *Authenticator) key(t *jwt.Token) (any, error) {
	if t.Method.Alg() == jwt.SigningMethodHS256.Alg() {
		return a.secret, nil
	}
	return a.keys.Keyfunc(t)
}

// Identify authenticates r. expires is zero when the identity does not expire.
func (a *Authenticator) Identify(r *http.Request) (id session.Identity, expires time.Time, err error) {
	q := r.URL.Query()
	if a.mode == AuthNone {
		if sup := q.Get("supervisor"); sup != "" {
			// Loopback development mode: an admin-scoped supervisor.
			if err := protocol.ValidateID(sup); err != nil {
				return id, expires, fmt.Errorf("query parameter supervisor: %w", err)
			}
			return session.Identity{AgentID: sup, Role: RoleSupervisor, AllTeams: true}, expires, nil
		}
		id.AgentID = q.Get("agent")
		if err := protocol.ValidateID(id.AgentID); err != nil {
			return id, expires, fmt.Errorf("query parameter agent: %w", err)
		}
		id.Role = RoleAgent
		if t := q.Get("teams"); t != "" {
			id.Teams = strings.Split(t, ",")
		}
		return id, expires, nil
	}
	token := q.Get("access_token")
	if t := subprotocolToken(r); t != "" {
		token = t
	}
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, rest, _ := strings.Cut(h, " ")
		if !strings.EqualFold(scheme, "Bearer") {
			return id, expires, errors.New("authorization header: want Bearer")
		}
		token = strings.TrimSpace(rest)
	}
	if token == "" {
		return id, expires, errors.New("missing token: use Authorization: Bearer <token>, the WebSocket subprotocol " + BearerSubprotocol + "<token>, or ?access_token=")
	}
	return a.parse(token)
}

// parse verifies a token and reads the identity from its claims. Claims are
// read generically (jwt.MapClaims): exp, nbf and iat must be JSON numbers,
// and role and teams may sit anywhere, as identity providers put them.
func (a *Authenticator) parse(token string) (id session.Identity, expires time.Time, err error) {
	claims := jwt.MapClaims{}
	if _, err := a.parser.ParseWithClaims(token, claims, a.key); err != nil {
		return id, expires, fmt.Errorf("invalid token: %w", err)
	}
	sub, _ := claims.GetSubject()
	if err := protocol.ValidateID(sub); err != nil {
		return id, expires, fmt.Errorf("invalid token: sub: %w", err)
	}
	role := RoleAgent
	if v, ok := claimAt(claims, a.roleClaim); ok && len(stringsOf(v)) > 0 {
		named := stringsOf(v)
		best := -1
		for _, r := range named {
			best = max(best, slices.Index(roles, r))
		}
		if best < 0 {
			return id, expires, fmt.Errorf("invalid token: %s names no role of %s", strings.Join(a.roleClaim, "."), strings.Join(roles, ", "))
		}
		role = roles[best]
	}
	var teams []string
	if v, ok := claimAt(claims, a.teamsClaim); ok {
		teams = stringsOf(v)
	}
	exp, _ := claims.GetExpirationTime() // required by the parser
	return session.Identity{AgentID: sub, Role: role, Teams: teams, AllTeams: role == RoleAdmin}, exp.Time, nil
}

// claimAt follows a claim path (realm_access.roles) through nested objects.
func claimAt(claims map[string]any, path []string) (any, bool) {
	var cur any = claims
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// stringsOf reads a claim that is a string or a list of strings; other
// values are ignored.
func stringsOf(v any) []string {
	switch v := v.(type) {
	case string:
		if v == "" || len(v) > protocol.MaxNameLength {
			return nil
		}
		return []string{v}
	case []any:
		var out []string
		for _, x := range v {
			if s, ok := x.(string); ok && s != "" && len(s) <= protocol.MaxNameLength {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// Subprotocol is the WebSocket subprotocol the broker speaks; with
// SubprotocolBatch (preferred when a client offers it) a frame may carry
// several messages, separated by newlines, so that a busy connection costs
// one write for many messages. A browser, which cannot set headers on a
// WebSocket, may offer its token as another subprotocol, BearerSubprotocol
// followed by the token; the broker never answers with that one, so the
// token is in no URL and no response.
const (
	Subprotocol       = "ctibroker.v1"
	SubprotocolBatch  = "ctibroker.v1.batch"
	BearerSubprotocol = "ctibroker.bearer."
)

// subprotocolToken returns the token offered as a subprotocol, if any.
func subprotocolToken(r *http.Request) string {
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(h, ",") {
			if t, ok := strings.CutPrefix(strings.TrimSpace(p), BearerSubprotocol); ok {
				return t
			}
		}
	}
	return ""
}

// IdentifyREST authenticates a REST or SSE request; expires is zero when
// the identity does not expire. With auth.mode none (a loopback-only
// development mode) a request without ?agent= acts as admin.
func (a *Authenticator) IdentifyREST(r *http.Request) (id session.Identity, expires time.Time, err error) {
	if a.mode == AuthNone && r.URL.Query().Get("agent") == "" {
		return session.Identity{AgentID: "local-admin", Role: RoleAdmin, AllTeams: true}, time.Time{}, nil
	}
	return a.Identify(r)
}

// MintToken signs a token for sub with the secret.
func MintToken(secret, sub, role string, teams []string, ttl time.Duration, now time.Time) (string, error) {
	if err := protocol.ValidateID(sub); err != nil {
		return "", fmt.Errorf("sub: %w", err)
	}
	if !slices.Contains(roles, role) {
		return "", fmt.Errorf("role %q is not one of %s", role, strings.Join(roles, ", "))
	}
	if ttl <= 0 {
		return "", errors.New("ttl must be positive")
	}
	c := Claims{Role: role, Teams: teams, RegisteredClaims: jwt.RegisteredClaims{
		Subject: sub, IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(ttl))}}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(secret))
}
