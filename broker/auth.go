package broker

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ctibroker/ctibroker/protocol"
	"github.com/ctibroker/ctibroker/session"
)

// Roles carried by the JWT role claim.
const (
	RoleAgent      = session.RoleAgent
	RoleSupervisor = session.RoleSupervisor
	RoleAdmin      = session.RoleAdmin
)

var roles = []string{RoleAgent, RoleSupervisor, RoleAdmin}

// Claims are the broker's JWT claims.
type Claims struct {
	Role  string   `json:"role"`
	Teams []string `json:"teams,omitempty"`
	jwt.RegisteredClaims
}

// Authenticator turns an HTTP request into an identity.
type Authenticator struct {
	mode   string
	secret []byte
}

// NewAuthenticator creates an authenticator for the configured mode.
func NewAuthenticator(cfg AuthConfig) *Authenticator {
	return &Authenticator{mode: cfg.Mode, secret: []byte(cfg.JWT.Secret)}
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
	var c Claims
	_, err = jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return a.secret, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}), jwt.WithExpirationRequired(), jwt.WithLeeway(5*time.Second))
	if err != nil {
		return id, expires, fmt.Errorf("invalid token: %w", err)
	}
	if err := protocol.ValidateID(c.Subject); err != nil {
		return id, expires, fmt.Errorf("invalid token: sub: %w", err)
	}
	if c.Role == "" {
		c.Role = RoleAgent
	}
	if !slices.Contains(roles, c.Role) {
		return id, expires, fmt.Errorf("invalid token: role %q is not one of %s", c.Role, strings.Join(roles, ", "))
	}
	return session.Identity{AgentID: c.Subject, Role: c.Role, Teams: c.Teams, AllTeams: c.Role == RoleAdmin}, c.ExpiresAt.Time, nil
}

// Subprotocol is the WebSocket subprotocol the broker speaks. A browser,
// which cannot set headers on a WebSocket, may offer its token as a second
// subprotocol, BearerSubprotocol followed by the token; the broker answers
// with Subprotocol only, so the token is in no URL and no response.
const (
	Subprotocol       = "ctibroker.v1"
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
