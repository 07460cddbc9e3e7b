package broker

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestIdentify(t *testing.T) {
	a := NewAuthenticator(AuthConfig{Mode: AuthJWT, JWT: struct {
		Secret string `koanf:"secret"`
	}{testSecret}})
	now := time.Now()
	sign := func(c jwt.Claims, method jwt.SigningMethod, key any) string {
		s, err := jwt.NewWithClaims(method, c).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	exp := jwt.NewNumericDate(now.Add(time.Hour))
	tests := []struct {
		name, token, wantErr, wantRole string
	}{
		{"supervisor", sign(Claims{Role: "supervisor", Teams: []string{"t"}, RegisteredClaims: jwt.RegisteredClaims{Subject: "sv", ExpiresAt: exp}}, jwt.SigningMethodHS256, []byte(testSecret)), "", "supervisor"},
		{"default role", sign(Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: "al", ExpiresAt: exp}}, jwt.SigningMethodHS256, []byte(testSecret)), "", "agent"},
		{"unknown role", sign(Claims{Role: "god", RegisteredClaims: jwt.RegisteredClaims{Subject: "al", ExpiresAt: exp}}, jwt.SigningMethodHS256, []byte(testSecret)), "role", ""},
		{"no exp", sign(Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: "al"}}, jwt.SigningMethodHS256, []byte(testSecret)), "exp", ""},
		{"bad sub", sign(Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: "a.b", ExpiresAt: exp}}, jwt.SigningMethodHS256, []byte(testSecret)), "sub", ""},
		{"alg none", sign(Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: "al", ExpiresAt: exp}}, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType), "signing method", ""},
		{"HS512", sign(Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: "al", ExpiresAt: exp}}, jwt.SigningMethodHS512, []byte(testSecret)), "signing method", ""},
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
