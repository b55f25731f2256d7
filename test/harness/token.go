package harness

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Token service constants, as the registry is configured with them.
const (
	TokenService = "ferry-test-registry"
	TokenIssuer  = "ferry-test-token-issuer"
	TokenPath    = "/service/token" // as in Harbor
	tokenTTL     = 300              // seconds, like Docker Hub and Harbor
)

// tokenAccess is one entry of the "access" claim (distribution's
// token.ResourceActions).
type tokenAccess struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// tokenClaims mirrors distribution v2.8 registry/auth/token.ClaimSet.
type tokenClaims struct {
	Issuer     string         `json:"iss"`
	Subject    string         `json:"sub"`
	Audience   string         `json:"aud"`
	Expiration int64          `json:"exp"`
	NotBefore  int64          `json:"nbf"`
	IssuedAt   int64          `json:"iat"`
	JWTID      string         `json:"jti"`
	Access     []*tokenAccess `json:"access"`
}

type tokenHeader struct {
	Type       string   `json:"typ"`
	SigningAlg string   `json:"alg"`
	X5c        []string `json:"x5c"`
}

// TokenRequest records one call to the token issuer.
type TokenRequest struct {
	User    string   // Basic user name, "" for anonymous
	Scopes  []string // scope parameters as sent
	Service string
	Status  int // 200, or 401 for wrong credentials
}

// tokenIssuer is a Harbor-like token service: it checks Basic credentials
// against bcrypt hashes, answers 401 to wrong ones, grants every requested
// scope to a known user and nothing to anonymous callers.
type tokenIssuer struct {
	hashes map[string][]byte
	key    *ecdsa.PrivateKey
	cert   *x509.Certificate

	mu       sync.Mutex
	requests []TokenRequest
	issued   atomic.Int64
}

func newTokenIssuer(t testing.TB, ca *CA, users map[string]string) *tokenIssuer {
	t.Helper()
	cert, key := ca.issue(t, true, "ferry test token signer")
	ti := &tokenIssuer{hashes: map[string][]byte{}, key: key, cert: cert}
	for u, p := range users {
		h, err := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
		if err != nil {
			t.Fatalf("hashing password of %s: %v", u, err)
		}
		ti.hashes[u] = h
	}
	return ti
}

func (ti *tokenIssuer) record(r TokenRequest) {
	ti.mu.Lock()
	ti.requests = append(ti.requests, r)
	ti.mu.Unlock()
}

// Requests returns the token requests so far.
func (ti *tokenIssuer) Requests() []TokenRequest {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	return append([]TokenRequest(nil), ti.requests...)
}

func (ti *tokenIssuer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := TokenRequest{Scopes: q["scope"], Service: q.Get("service"), Status: http.StatusOK}
	user, pass, hasAuth := r.BasicAuth()
	if hasAuth {
		req.User = user
		h, known := ti.hashes[user]
		if !known || bcrypt.CompareHashAndPassword(h, []byte(pass)) != nil {
			req.Status = http.StatusUnauthorized
			ti.record(req)
			w.Header().Set("WWW-Authenticate", `Basic realm="ferry-test-token"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintln(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
			return
		}
	}
	var access []*tokenAccess
	if hasAuth { // anonymous callers get a token without rights, as in Harbor
		for _, s := range q["scope"] {
			if a := parseScope(s); a != nil {
				access = append(access, a)
			}
		}
	}
	tok, err := ti.sign(req.User, access)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	ti.record(req)
	ti.issued.Add(1)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"token":        tok,
		"access_token": tok,
		"expires_in":   tokenTTL,
		"issued_at":    time.Now().UTC().Format(time.RFC3339),
	})
}

// parseScope parses "repository:name:pull,push". The name may hold colons
// (a registry host:port), so type ends at the first colon and actions start
// after the last one.
func parseScope(s string) *tokenAccess {
	i, j := strings.Index(s, ":"), strings.LastIndex(s, ":")
	if i < 0 || j <= i {
		return nil
	}
	a := &tokenAccess{Type: s[:i], Name: s[i+1 : j]}
	for _, act := range strings.Split(s[j+1:], ",") {
		if act != "" {
			a.Actions = append(a.Actions, act)
		}
	}
	return a
}

// sign builds an ES256 JWS the way distribution v2.8 verifies it: header
// {typ, alg, x5c: [leaf DER base64 std]}, segments base64url without padding,
// signature r||s as two 32-byte big-endian integers over "header.claims".
func (ti *tokenIssuer) sign(subject string, access []*tokenAccess) (string, error) {
	now := time.Now()
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", err
	}
	if access == nil {
		access = []*tokenAccess{}
	}
	claims := tokenClaims{
		Issuer:     TokenIssuer,
		Subject:    subject,
		Audience:   TokenService,
		Expiration: now.Add(tokenTTL * time.Second).Unix(),
		NotBefore:  now.Add(-10 * time.Second).Unix(),
		IssuedAt:   now.Unix(),
		JWTID:      hex.EncodeToString(jti),
		Access:     access,
	}
	header := tokenHeader{Type: "JWT", SigningAlg: "ES256", X5c: []string{base64.StdEncoding.EncodeToString(ti.cert.Raw)}}
	hb, err := json.Marshal(header)
	if err != nil {
		return "", err
	}
	cb, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	signed := enc.EncodeToString(hb) + "." + enc.EncodeToString(cb)
	sum := sha256.Sum256([]byte(signed))
	r, s, err := ecdsa.Sign(rand.Reader, ti.key, sum[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signed + "." + enc.EncodeToString(sig), nil
}
