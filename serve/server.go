package serve

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// ServerConfig configures Serve.
type ServerConfig struct {
	// TLSCertFile and TLSKeyFile, both or neither: serve HTTPS.
	TLSCertFile, TLSKeyFile string
	// ShutdownGrace is how long requests in flight may finish once ctx is
	// done before their connections are closed (default 10s).
	ShutdownGrace time.Duration
	// Logger receives server errors (default: discard).
	Logger *slog.Logger
}

// LoadTLS checks and loads a certificate and key pair.
func LoadTLS(certFile, keyFile string) (*tls.Config, error) {
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("TLS needs both a certificate and a key")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading TLS certificate %s and key %s: %w", certFile, keyFile, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// Serve serves h on ln until ctx is done, then shuts down gracefully: it
// stops accepting connections, lets requests in flight finish for up to
// ShutdownGrace, and closes what remains. It returns nil after a shutdown
// caused by ctx, and the error otherwise.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, cfg ServerConfig) error {
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	if cfg.TLSCertFile != "" || cfg.TLSKeyFile != "" {
		tc, err := LoadTLS(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			_ = ln.Close()
			return err
		}
		srv.TLSConfig = tc
		ln = tls.NewListener(ln, tc)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownGrace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		cfg.Logger.Warn("requests still running after the shutdown grace period; closing their connections", "grace", cfg.ShutdownGrace)
		err = srv.Close()
	}
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// AccessLog wraps h to log one line per request to l at level Info:
// method, path (with query), status, bytes of body sent, duration, remote
// address and, with basic auth, the user name. A response aborted on
// purpose (a blob that failed its digest check) is logged with
// aborted=true before the abort continues.
func AccessLog(h http.Handler, l *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		aborted := true
		defer func() {
			status := sw.status
			if status == 0 {
				status = http.StatusOK
			}
			attrs := []any{"method", r.Method, "path", r.URL.RequestURI(), "status", status, "bytes", sw.n,
				"duration", time.Since(start), "remote", r.RemoteAddr}
			if u, _, ok := r.BasicAuth(); ok {
				attrs = append(attrs, "user", u)
			}
			if aborted {
				attrs = append(attrs, "aborted", true)
			}
			l.Info("request", attrs...)
		}()
		h.ServeHTTP(sw, r)
		aborted = false
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
