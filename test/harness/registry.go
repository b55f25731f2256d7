package harness

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/crypto/bcrypt"
)

// RegistryBinary is the CNCF distribution binary StartRegistry runs. The
// environment variable FERRY_DOCKER_REGISTRY overrides it.
const RegistryBinary = "/usr/bin/docker-registry"

// RegistryOptions selects how StartRegistry configures the registry.
type RegistryOptions struct {
	// Users are the accounts (name → password) allowed in; nil means no auth.
	// Without TokenAuth they go into an htpasswd file (bcrypt).
	Users map[string]string
	// TLS serves HTTPS with a certificate for 127.0.0.1 and localhost from CA.
	TLS bool
	// CA signs the server certificate and the token signer; nil: a new one.
	CA *CA
	// TokenAuth configures Bearer-token auth like Harbor: the registry trusts
	// JWTs from an issuer in the test process, served on the registry's own
	// host:port under TokenPath (go-containerregistry refuses a realm on
	// another loopback host:port). Requires Users.
	TokenAuth bool
	// AccessLog keeps the registry's access log so Requests can count.
	AccessLog bool
}

// Request is one request a registry (or proxy) saw.
type Request struct {
	Method string
	Path   string // path and query
	Status int    // 0 while a proxied or in-process request is still being served
}

// Registry is a running registry.
type Registry struct {
	Host   string // 127.0.0.1:PORT
	URL    string // http(s)://127.0.0.1:PORT
	CAFile string // PEM of the CA to trust; "" for plain HTTP
	CA     *CA    // nil for plain HTTP
	Users  map[string]string
	// Dir is the registry's storage root ("" in process).
	Dir string
	// Requests returns the requests served so far; nil unless the mode
	// records them (AccessLog, in process, proxies). Access-log entries are
	// written just after the response, so the last one may lag a little.
	Requests func() []Request
	// TokenRequests returns the calls to the token issuer (TokenAuth only).
	TokenRequests func() []TokenRequest
	// CPU returns the CPU time (user and system) the registry process has
	// used so far; nil in process, 0 where the system does not tell.
	CPU func() time.Duration
}

// TLS reports whether the registry speaks HTTPS.
func (r *Registry) TLS() bool { return strings.HasPrefix(r.URL, "https://") }

// Transport returns an HTTP transport that trusts the registry's CA.
func (r *Registry) Transport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if r.CA != nil {
		tr.TLSClientConfig = r.CA.TLSConfig()
	}
	return tr
}

// Ref parses "repo:tag" or "repo@digest" on this registry.
func (r *Registry) Ref(t testing.TB, repoRef string) name.Reference {
	t.Helper()
	var opts []name.Option
	if !r.TLS() {
		opts = append(opts, name.Insecure)
	}
	ref, err := name.ParseReference(r.Host+"/"+repoRef, opts...)
	if err != nil {
		t.Fatalf("parsing reference %q: %v", repoRef, err)
	}
	return ref
}

// RemoteOptions returns go-containerregistry options that trust the CA and
// log in as user with the password from Users ("" = anonymous).
func (r *Registry) RemoteOptions(user string) []remote.Option {
	var a authn.Authenticator = authn.Anonymous
	if user != "" {
		a = &authn.Basic{Username: user, Password: r.Users[user]}
	}
	return r.RemoteOptionsAuth(a)
}

// RemoteOptionsAuth is RemoteOptions with any authenticator (for example a
// wrong password).
func (r *Registry) RemoteOptionsAuth(a authn.Authenticator) []remote.Option {
	return []remote.Option{remote.WithAuth(a), remote.WithTransport(r.Transport())}
}

// StartInProcess runs go-containerregistry's registry in httptest: plain
// HTTP, no auth, requests recorded.
func StartInProcess(t testing.TB) *Registry {
	t.Helper()
	rec := &recorder{}
	h := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(rec.wrap(h))
	t.Cleanup(srv.Close)
	return &Registry{
		Host:     strings.TrimPrefix(srv.URL, "http://"),
		URL:      srv.URL,
		Requests: rec.Requests,
	}
}

// StartRegistry runs the distribution registry binary with filesystem storage
// in t.TempDir(), waits until /v2/ answers and stops it in t.Cleanup.
func StartRegistry(t testing.TB, opts RegistryOptions) *Registry {
	t.Helper()
	bin := registryBinary(t)
	if opts.TokenAuth && len(opts.Users) == 0 {
		t.Fatalf("StartRegistry: TokenAuth needs Users")
	}
	dir := t.TempDir()
	reg := &Registry{Users: opts.Users, Dir: filepath.Join(dir, "storage")}
	if opts.TLS || opts.TokenAuth {
		reg.CA = opts.CA
		if reg.CA == nil {
			reg.CA = NewCA(t)
		}
	}

	var cfg strings.Builder
	fmt.Fprintf(&cfg, "version: 0.1\nlog:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: %t\n", !opts.AccessLog)
	fmt.Fprintf(&cfg, "storage:\n  filesystem:\n    rootdirectory: %q\n  delete:\n    enabled: true\n  cache:\n    blobdescriptor: inmemory\n  maintenance:\n    uploadpurging:\n      enabled: false\n", reg.Dir)
	fmt.Fprintf(&cfg, "health:\n  storagedriver:\n    enabled: false\n")

	var front *tokenFront
	switch {
	case opts.TokenAuth:
		front = startTokenFront(t, reg, opts.TLS, dir)
		cfg.WriteString(front.config)
	case opts.Users != nil:
		cfg.WriteString(htpasswdConfig(t, opts.Users, dir))
	}
	var tlsCfg string
	if opts.TLS && !opts.TokenAuth {
		certFile, keyFile := reg.CA.Issue(t)
		tlsCfg = fmt.Sprintf("  tls:\n    certificate: %q\n    key: %q\n", certFile, keyFile)
	}

	proc, backendURL := launchRegistry(t, bin, dir, cfg.String(), tlsCfg, reg.Transport())
	if opts.AccessLog {
		reg.Requests = proc.out.requests
	}
	pid := proc.cmd.Process.Pid
	reg.CPU = func() time.Duration { return processCPU(pid) }
	if front != nil {
		front.forwardTo(backendURL)
		reg.URL = front.srv.URL
	} else {
		reg.URL = backendURL
	}
	reg.Host = strings.TrimPrefix(strings.TrimPrefix(reg.URL, "https://"), "http://")
	if !opts.TLS {
		reg.CA = nil // token mode signs with a CA, but serves plain HTTP
	}
	if reg.CA != nil {
		reg.CAFile = reg.CA.CertFile
	}
	if front != nil {
		if err := waitReady(reg.URL, reg.Transport(), nil, 10*time.Second); err != nil {
			t.Fatalf("token front: %v", err)
		}
	}
	return reg
}

// registryBinary is the distribution registry to run: $FERRY_DOCKER_REGISTRY
// or RegistryBinary.
func registryBinary(t testing.TB) string {
	t.Helper()
	bin := RegistryBinary
	if v := os.Getenv("FERRY_DOCKER_REGISTRY"); v != "" {
		bin = v
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("registry binary %s missing (%v): run `apt-get update && apt-get install -y docker-registry skopeo apache2-utils`", bin, err)
	}
	return bin
}

// tokenFront is the server in front of a token-auth registry. The issuer
// shares an origin with the registry: the front answers TokenPath and
// proxies the rest to the registry, which listens on plain HTTP on another
// loopback port.
type tokenFront struct {
	srv        *httptest.Server
	setHandler func(http.Handler) // called once the registry has started
	issuer     *tokenIssuer
	config     string // the registry's auth: section
}

// startTokenFront starts the front (over TLS with opts.TLS) and its issuer,
// which signs with reg.CA for reg.Users.
func startTokenFront(t testing.TB, reg *Registry, useTLS bool, dir string) *tokenFront {
	t.Helper()
	f := &tokenFront{issuer: newTokenIssuer(t, reg.CA, reg.Users)}
	signerFile := filepath.Join(dir, "token-roots.pem")
	writeFile(t, signerFile, reg.CA.CertPEM)
	f.srv, f.setHandler = startLateServer(t, reg.CA, useTLS, false)
	f.config = fmt.Sprintf("auth:\n  token:\n    realm: %q\n    service: %q\n    issuer: %q\n    rootcertbundle: %q\n",
		f.srv.URL+TokenPath, TokenService, TokenIssuer, signerFile)
	reg.TokenRequests = f.issuer.Requests
	return f
}

// forwardTo makes the front proxy to the registry at backendURL.
func (f *tokenFront) forwardTo(backendURL string) {
	target := &Registry{URL: backendURL, Host: strings.TrimPrefix(backendURL, "http://")}
	f.setHandler(newForwarder(target, f.srv.URL, nil, map[string]http.Handler{TokenPath: f.issuer}))
}

// htpasswdConfig writes an htpasswd file for users into dir and returns the
// registry's auth: section that uses it.
func htpasswdConfig(t testing.TB, users map[string]string, dir string) string {
	t.Helper()
	var ht bytes.Buffer
	for u, p := range users {
		h, err := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
		if err != nil {
			t.Fatalf("hashing password of %s: %v", u, err)
		}
		fmt.Fprintf(&ht, "%s:%s\n", u, h)
	}
	htFile := filepath.Join(dir, "htpasswd")
	writeFile(t, htFile, ht.Bytes())
	return fmt.Sprintf("auth:\n  htpasswd:\n    realm: ferry-test\n    path: %q\n", htFile)
}

// launchRegistry starts bin with cfg on a free loopback port (retrying when
// another process takes the port first) and stops it at cleanup.
func launchRegistry(t testing.TB, bin, dir, cfg, tlsCfg string, rt http.RoundTripper) (*registryProcess, string) {
	t.Helper()
	var proc *registryProcess
	var backendURL string
	for attempt := 0; ; attempt++ {
		port := freePort(t)
		addr := "127.0.0.1:" + strconv.Itoa(port)
		conf := cfg + fmt.Sprintf("http:\n  addr: %s\n  secret: ferry-test-secret\n%s", addr, tlsCfg)
		confFile := filepath.Join(dir, "config.yml")
		writeFile(t, confFile, []byte(conf))
		scheme := "http"
		if tlsCfg != "" {
			scheme = "https"
		}
		backendURL = scheme + "://" + addr
		var err error
		proc, err = startProcess(bin, confFile, backendURL, rt)
		if err == nil {
			break
		}
		if attempt == 2 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("starting registry: %v", err)
		}
	}
	t.Cleanup(func() {
		proc.stop()
		if t.Failed() {
			t.Logf("registry log (tail):\n%s", proc.out.tail(40))
		}
	})
	return proc, backendURL
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type registryProcess struct {
	cmd  *exec.Cmd
	out  *logBuffer
	done chan struct{}
	err  error
}

func startProcess(bin, confFile, url string, tr http.RoundTripper) (*registryProcess, error) {
	// The registry writes its log straight into a file (os/exec hands it
	// the descriptor): no copying goroutine in the test process competes
	// with the tools a benchmark measures.
	f, err := os.OpenFile(filepath.Join(filepath.Dir(confFile), "registry.log"), os.O_CREATE|os.O_TRUNC|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the child holds its own copy
	p := &registryProcess{out: &logBuffer{path: f.Name()}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, "serve", confFile)
	p.cmd.Stdout = f
	p.cmd.Stderr = f
	p.cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none")
	killWithParent(p.cmd)
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("running %s: %w", bin, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	if err := waitReady(url, tr, p.done, 15*time.Second); err != nil {
		p.stop()
		return nil, fmt.Errorf("%w; log:\n%s", err, p.out.tail(20))
	}
	return p, nil
}

func (p *registryProcess) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// waitReady polls GET /v2/ until it answers 200 or 401.
func waitReady(url string, tr http.RoundTripper, exited <-chan struct{}, timeout time.Duration) error {
	client := &http.Client{Transport: tr, Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("registry exited before it was ready")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/v2/", nil)
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				cancel()
				return nil
			}
			err = fmt.Errorf("GET %s/v2/: %s", url, resp.Status)
		}
		cancel()
		last = err
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("registry at %s not ready after %s: %v", url, timeout, last)
}

// logBuffer is a registry's log, in the file it writes.
type logBuffer struct {
	path string
}

func (b *logBuffer) String() string {
	data, err := os.ReadFile(b.path)
	if err != nil {
		return fmt.Sprintf("(reading the registry's log: %v)", err)
	}
	return string(data)
}

func (b *logBuffer) tail(n int) string {
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// accessLine matches a combined-log-format line as distribution writes it.
var accessLine = regexp.MustCompile(`"([A-Z]+) (\S+) HTTP/[0-9.]+" (\d{3}) `)

func (b *logBuffer) requests() []Request {
	var out []Request
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := accessLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		status, _ := strconv.Atoi(m[3])
		out = append(out, Request{Method: m[1], Path: m[2], Status: status})
	}
	return out
}
