package broker

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
)

func TestIdentify(t *testing.T) {
	a, err := NewAuthenticator(context.Background(), AuthConfig{Mode: AuthJWT, JWT: JWTConfig{Secret: testSecret,
		Issuer: "https://idp", Audience: "cti", RoleClaim: "role", TeamsClaim: "teams"}}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	sign := func(c jwt.Claims, method jwt.SigningMethod, key any) string {
		s, err := jwt.NewWithClaims(method, c).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	exp := jwt.NewNumericDate(now.Add(time.Hour))
	hs := func(c jwt.MapClaims) string {
		base := jwt.MapClaims{"sub": "al", "iss": "https://idp", "aud": "cti", "exp": exp.Unix()}
		for k, v := range c {
			if v == nil {
				delete(base, k)
			} else {
				base[k] = v
			}
		}
		return sign(base, jwt.SigningMethodHS256, []byte(testSecret))
	}
	reg := func(sub string) jwt.RegisteredClaims {
		return jwt.RegisteredClaims{Subject: sub, ExpiresAt: exp, Issuer: "https://idp", Audience: jwt.ClaimStrings{"cti"}}
	}
	tests := []struct {
		name, token, wantErr, wantRole string
	}{
		{"supervisor", sign(Claims{Role: "supervisor", Teams: []string{"t"}, RegisteredClaims: reg("sv")}, jwt.SigningMethodHS256, []byte(testSecret)), "", "supervisor"},
		{"default role", sign(Claims{RegisteredClaims: reg("al")}, jwt.SigningMethodHS256, []byte(testSecret)), "", "agent"},
		{"highest of several roles", hs(jwt.MapClaims{"role": []any{"agent", "admin", "offline"}}), "", "admin"},
		{"unknown role", sign(Claims{Role: "god", RegisteredClaims: reg("al")}, jwt.SigningMethodHS256, []byte(testSecret)), "role", ""},
		{"no exp", hs(jwt.MapClaims{"exp": nil}), "exp", ""},
		{"exp as a string", hs(jwt.MapClaims{"exp": "9999999999"}), "exp", ""},
		{"nbf as a string", hs(jwt.MapClaims{"nbf": "1"}), "nbf", ""},
		{"wrong issuer", hs(jwt.MapClaims{"iss": "https://evil"}), "iss", ""},
		{"no audience", hs(jwt.MapClaims{"aud": nil}), "aud", ""},
		{"bad sub", sign(Claims{RegisteredClaims: reg("a.b")}, jwt.SigningMethodHS256, []byte(testSecret)), "sub", ""},
		{"alg none", sign(Claims{RegisteredClaims: reg("al")}, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType), "signing method", ""},
		{"HS512", sign(Claims{RegisteredClaims: reg("al")}, jwt.SigningMethodHS512, []byte(testSecret)), "signing method", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/v1/ws", nil)
			r.Header.Set("Authorization", "Bearer "+tt.token)
			id, _, err := a.Identify(r)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || id.Role != tt.wantRole {
				t.Fatalf("Identify = %+v, %v", id, err)
			}
		})
	}
	if _, err := MintToken(testSecret, "x", "root", nil, time.Hour, now); err == nil {
		t.Fatal("minted a token with an unknown role")
	}
}
