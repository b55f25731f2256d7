package registry

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ferry-airgap/ferry/internal/names"
)

// loadRoots returns the system roots plus the PEM certificates in files.
func loadRoots(files []string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	for _, f := range files {
		if err := appendPEMFile(pool, f); err != nil {
			return nil, err
		}
	}
	return pool, nil
}

func appendPEMFile(pool *x509.CertPool, file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("%w: reading CA certificate: %w", ErrConfig, err)
	}
	if !pool.AppendCertsFromPEM(b) {
		return fmt.Errorf("%w: %s: no PEM certificate found", ErrConfig, file)
	}
	return nil
}

// transportFor returns the cached http.Transport for host (canonical form),
// building it on first use from the global options, certs.d and HostConfig.
func (c *Client) transportFor(h string) (*http.Transport, error) {
	c.mu.Lock()
	t, ok := c.transports[h]
	hc := c.hosts[h]
	c.mu.Unlock()
	if ok {
		return t, nil
	}
	cfg, err := c.tlsConfig(h, hc)
	if err != nil {
		return nil, err
	}
	t = &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   30 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   50,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: 1 * time.Second,
		TLSClientConfig:       cfg,
		// Blobs are large: bigger socket buffers cut syscalls per byte.
		WriteBufferSize: 256 << 10,
		ReadBufferSize:  256 << 10,
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if existing, ok := c.transports[h]; ok {
		return existing, nil
	}
	c.transports[h] = t
	return t, nil
}

// tlsConfig builds the TLS settings for host h: system roots + --ca-cert,
// plus the docker certs.d directory for the host (CA *.crt, client
// *.cert/*.key pairs), and skip-verify globally or per host.
func (c *Client) tlsConfig(h string, hc HostConfig) (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		RootCAs:            c.roots,
		InsecureSkipVerify: c.opts.InsecureSkipVerify || hc.SkipTLSVerify, //nolint:gosec // operator's explicit choice
	}
	if c.opts.CertsDir == "" {
		return cfg, nil
	}
	for _, dir := range certsDirs(c.opts.CertsDir, h) {
		entries, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%w: certs.d for %s: %w", ErrConfig, h, err)
		}
		for _, e := range entries {
			n := e.Name()
			switch {
			case strings.HasSuffix(n, ".crt"):
				if cfg.RootCAs == c.roots {
					cfg.RootCAs = c.roots.Clone()
				}
				if err := appendPEMFile(cfg.RootCAs, filepath.Join(dir, n)); err != nil {
					return nil, fmt.Errorf("certs.d for %s: %w", h, err)
				}
			case strings.HasSuffix(n, ".cert"):
				key := strings.TrimSuffix(n, ".cert") + ".key"
				pair, err := tls.LoadX509KeyPair(filepath.Join(dir, n), filepath.Join(dir, key))
				if err != nil {
					return nil, fmt.Errorf("%w: certs.d for %s: client certificate %s needs key %s: %w", ErrConfig, h, n, key, err)
				}
				cfg.Certificates = append(cfg.Certificates, pair)
			case strings.HasSuffix(n, ".key"):
				cert := strings.TrimSuffix(n, ".key") + ".cert"
				if _, err := os.Stat(filepath.Join(dir, cert)); err != nil {
					return nil, fmt.Errorf("%w: certs.d for %s: key %s has no certificate %s", ErrConfig, h, n, cert)
				}
			}
		}
	}
	return cfg, nil
}

// certsDirs lists the certs.d directories docker would consult for h.
// A host on the default https port is looked up as DIR/host (and, for
// completeness, DIR/host:443).
func certsDirs(root, h string) []string {
	if strings.ContainsAny(h, `/\`) || h == "" || h == "." || h == ".." {
		return nil
	}
	dirs := []string{filepath.Join(root, h)}
	if _, _, err := net.SplitHostPort(h); err != nil { // no port
		dirs = append(dirs, filepath.Join(root, h+":443"))
	}
	if h == DockerHub {
		for _, alias := range names.DockerHubAliases() {
			if alias != h {
				dirs = append(dirs, filepath.Join(root, alias))
			}
		}
	}
	return dirs
}
