package remote_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/ctibroker/ctibroker/adapters/remote"
	"github.com/ctibroker/ctibroker/adapters/remote/sdk"
	"github.com/ctibroker/ctibroker/adapters/sim"
)

// pki is a throwaway CA with a server and a client certificate, written as
// PEM files.
type pki struct {
	dir                                  string
	caPool                               *x509.CertPool
	server, client                       tls.Certificate
	caFile, clientCert, clientKey, other string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir(), caPool: x509.NewCertPool()}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	p.caPool.AddCert(ca)
	p.caFile = p.write(t, "ca.pem", "CERTIFICATE", caDER)
	issue := func(serial int64, name string, usage x509.ExtKeyUsage) (tls.Certificate, string, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, _ := x509.MarshalECPrivateKey(key)
		certFile, keyFile := p.write(t, name+".pem", "CERTIFICATE", der), p.write(t, name+"-key.pem", "EC PRIVATE KEY", keyDER)
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		return c, certFile, keyFile
	}
	p.server, _, _ = issue(2, "adapter", x509.ExtKeyUsageServerAuth)
	p.client, p.clientCert, p.clientKey = issue(3, "node", x509.ExtKeyUsageClientAuth)
	return p
}

func (p *pki) write(t *testing.T, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// The broker dials an adapter that requires mutual TLS: with the node's
// certificate the link comes up; without it, or without trusting the
// adapter's CA, it never does.
func TestRemoteMutualTLS(t *testing.T) {
	p := newPKI(t)
	sw, err := sim.New(sim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{p.server}, ClientCAs: p.caPool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12})
	srv := sdk.New(sw, zap.NewNop(), grpc.Creds(creds))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); _ = sw.Close() })

	for _, tt := range []struct {
		name       string
		ca         bool
		cert, want bool
	}{
		{"mutual TLS", true, true, true},
		{"no client certificate", true, false, false},
		{"the adapter's CA not trusted", false, true, false},
	} {
		var cfg remote.Config
		cfg.Addr = lis.Addr().String()
		cfg.TLS.Enabled, cfg.TLS.ServerName = true, "adapter"
		if tt.ca {
			cfg.TLS.CA = p.caFile
		}
		if tt.cert {
			cfg.TLS.Cert, cfg.TLS.Key = p.clientCert, p.clientKey
		}
		a, err := remote.Dial(cfg, "n1")
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		wait := 3 * time.Second
		if !tt.want {
			wait = 500 * time.Millisecond
		}
		if got := a.WaitLinked(wait); got != tt.want {
			t.Errorf("%s: linked %v, want %v", tt.name, got, tt.want)
		}
		_ = a.Close()
	}
}
