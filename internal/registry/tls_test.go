package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func okHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			w.WriteHeader(http.StatusOK)
			return
		}
		http.NotFound(w, r)
	})
}

// checkTLS runs CheckAuth (ping over https) against host.
func checkTLS(t *testing.T, c *Client, host string) error {
	t.Helper()
	reg, err := name.NewRegistry(host, c.NameOptions(host)...)
	if err != nil {
		t.Fatal(err)
	}
	return c.CheckAuth(context.Background(), reg, authn.Anonymous, "")
}

func TestCACertFile(t *testing.T) {
	ca := newTestCA(t)
	srv := tlsServer(t, ca, okHandler(), nil)
	host := hostOf(t, srv)

	without, _ := newTestClient(t, Options{})
	err := checkTLS(t, without, host)
	if !errors.Is(err, ErrTLS) {
		t.Fatalf("without the CA: err = %v, want ErrTLS", err)
	}
	if !strings.Contains(err.Error(), "--ca-cert") {
		t.Errorf("error %q lacks the --ca-cert hint", err)
	}
	var ue x509.UnknownAuthorityError
	if !errors.As(err, &ue) {
		t.Errorf("error %v does not keep the x509 cause", err)
	}

	caFile := writeFile(t, filepath.Join(t.TempDir(), "ca.pem"), ca.certPEM)
	with, _ := newTestClient(t, Options{CACertFiles: []string{caFile}})
	if err := checkTLS(t, with, host); err != nil {
		t.Fatalf("with --ca-cert: %v", err)
	}
	// The same trust applies to remote.* calls.
	ref, _ := name.ParseReference(host+"/a/b:c", with.NameOptions(host)...)
	_, err = remote.Head(ref, with.RemoteOptions(context.Background(), host, nil)...)
	if !errors.Is(Explain(err), ErrNotFound) {
		t.Errorf("HEAD of a missing manifest: %v, want ErrNotFound", err)
	}
}

func TestCACertFileErrors(t *testing.T) {
	if _, err := New(Options{CACertFiles: []string{filepath.Join(t.TempDir(), "missing.pem")}}); !errors.Is(err, ErrConfig) {
		t.Errorf("missing CA file: err = %v, want ErrConfig", err)
	}
	bad := writeFile(t, filepath.Join(t.TempDir(), "bad.pem"), []byte("not a certificate"))
	if _, err := New(Options{CACertFiles: []string{bad}}); !errors.Is(err, ErrConfig) {
		t.Errorf("non-PEM CA file: err = %v, want ErrConfig", err)
	}
}

func TestCertsDirCAAndClientCertificate(t *testing.T) {
	ca := newTestCA(t)
	clientPool := x509.NewCertPool()
	clientPool.AddCert(ca.cert)
	srv := tlsServer(t, ca, okHandler(), &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clientPool})
	host := hostOf(t, srv)

	dir := t.TempDir()
	hostDir := filepath.Join(dir, host) // DIR/127.0.0.1:PORT
	writeFile(t, filepath.Join(hostDir, "ca.crt"), ca.certPEM)

	// CA only: the server demands a client certificate.
	c, _ := newTestClient(t, Options{CertsDir: dir})
	if err := checkTLS(t, c, host); err == nil {
		t.Fatal("without a client certificate the handshake must fail")
	}

	_, certPEM, keyPEM := ca.issue(t, false)
	writeFile(t, filepath.Join(hostDir, "client.cert"), certPEM)
	writeFile(t, filepath.Join(hostDir, "client.key"), keyPEM)
	c, _ = newTestClient(t, Options{CertsDir: dir})
	if err := checkTLS(t, c, host); err != nil {
		t.Fatalf("certs.d with ca.crt + client.cert/key: %v", err)
	}

	// Another host's directory does not apply.
	other := t.TempDir()
	writeFile(t, filepath.Join(other, "127.0.0.1:1", "ca.crt"), ca.certPEM)
	c, _ = newTestClient(t, Options{CertsDir: other})
	if err := checkTLS(t, c, host); !errors.Is(err, ErrTLS) {
		t.Fatalf("certs.d of another host: err = %v, want ErrTLS", err)
	}
}

func TestCertsDirKeyWithoutCert(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "reg.example:5000", "client.key"), []byte("x"))
	c, _ := newTestClient(t, Options{CertsDir: dir})
	_, err := c.transportFor("reg.example:5000")
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "client.cert") {
		t.Fatalf("err = %v, want ErrConfig naming client.cert", err)
	}
}

func TestSkipVerify(t *testing.T) {
	ca := newTestCA(t)
	srv := tlsServer(t, ca, okHandler(), nil)
	host := hostOf(t, srv)

	global, _ := newTestClient(t, Options{InsecureSkipVerify: true})
	if err := checkTLS(t, global, host); err != nil {
		t.Fatalf("--insecure-skip-tls-verify: %v", err)
	}

	perHost, _ := newTestClient(t, Options{})
	perHost.Configure("other.example", HostConfig{SkipTLSVerify: true})
	if err := checkTLS(t, perHost, host); !errors.Is(err, ErrTLS) {
		t.Fatalf("skip-verify for another host applied here: %v", err)
	}
	perHost.Configure(host, HostConfig{SkipTLSVerify: true})
	if err := checkTLS(t, perHost, host); err != nil {
		t.Fatalf("skip-tls-verify for %s: %v", host, err)
	}
}
