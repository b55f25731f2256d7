package registry

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"go.yaml.in/yaml/v3"
)

// Keychain resolves credentials in ferry's one documented order: logins
// given explicitly (flags, then a mapping file's auth; see Resolve), then
// --auth-file, then the docker default keychain (~/.docker/config.json,
// credential helpers, $REGISTRY_AUTH_FILE, Podman's auth.json). Docker
// Hub's aliases are one host.
type Keychain struct {
	mu       sync.RWMutex
	explicit map[string]authn.AuthConfig
	file     map[string]authn.AuthConfig
	authFile string
	fallback authn.Keychain // authn.DefaultKeychain; nil = none (tests)
}

// NewKeychain reads authFile ("" = none): a docker config.json
// ({"auths":{host:{auth|username+password}}}), a Kubernetes pull secret
// (JSON or YAML, data[".dockerconfigjson"] in base64, or stringData), or the
// bare dockerconfigjson. Errors never quote the file's content.
func NewKeychain(authFile string) (*Keychain, error) {
	k := &Keychain{
		explicit: map[string]authn.AuthConfig{},
		file:     map[string]authn.AuthConfig{},
		authFile: authFile,
		fallback: authn.DefaultKeychain,
	}
	if authFile == "" {
		return k, nil
	}
	b, err := os.ReadFile(authFile)
	if err != nil {
		return nil, fmt.Errorf("%w: reading auth file: %w", ErrConfig, err)
	}
	auths, err := parseAuthFile(b)
	if err != nil {
		return nil, fmt.Errorf("%w: auth file %s: %w", ErrConfig, authFile, err)
	}
	for host, cfg := range auths {
		k.file[canonicalHost(host)] = cfg
	}
	return k, nil
}

// Set records explicit credentials for host; they win over every other source.
func (k *Keychain) Set(host, username, password string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.explicit[canonicalHost(host)] = authn.AuthConfig{Username: username, Password: password}
}

// Login is a credential given explicitly for one registry: by the flags
// (--username with --password-stdin) or by a mapping file's auth field.
type Login struct {
	Host      string // the registry it is for ("" = any); Docker Hub's aliases are one host
	Username  string
	Password  string
	Anonymous bool   // `auth: none`: no credentials at all, not even the keychain's
	From      string // where it was given, for messages: "--username", "task \"x\" of m.yaml"
}

// For reports whether l applies to host.
func (l Login) For(host string) bool {
	return l.Host == "" || canonicalHost(l.Host) == canonicalHost(host)
}

// Resolve returns the authenticator for host, or authn.Anonymous, in
// ferry's order: the first of logins that applies to host (callers pass
// the flags' login before the mapping file's), then explicit credentials
// set with Set, then --auth-file, then the docker keychain.
func (k *Keychain) Resolve(host string, logins ...Login) (authn.Authenticator, error) {
	for _, l := range logins {
		if !l.For(host) || (!l.Anonymous && l.Username == "" && l.Password == "") {
			continue
		}
		if l.Anonymous {
			return authn.Anonymous, nil
		}
		src := cmp.Or(l.From, "explicit credentials")
		return &Credential{host: canonicalHost(host), source: src, cfg: authn.AuthConfig{Username: l.Username, Password: l.Password}, user: l.Username}, nil
	}
	h := canonicalHost(host)
	k.mu.RLock()
	cfg, ok := k.explicit[h]
	src := "explicit credentials"
	if !ok {
		cfg, ok = k.file[h]
		src = "auth file " + k.authFile
	}
	k.mu.RUnlock()
	if ok {
		return &Credential{host: h, source: src, cfg: cfg, user: cfg.Username}, nil
	}
	if k.fallback == nil {
		return authn.Anonymous, nil
	}
	reg, err := name.NewRegistry(h)
	if err != nil {
		return nil, fmt.Errorf("%w: registry name %q: %w", ErrConfig, host, err)
	}
	a, err := k.fallback.Resolve(reg)
	if err != nil {
		// The docker keychain's errors (bad config.json, failing helper)
		// do not contain secrets.
		return nil, fmt.Errorf("docker keychain for %s: %w", h, err)
	}
	if a == nil || a == authn.Anonymous {
		return authn.Anonymous, nil
	}
	cfgp, err := a.Authorization()
	if err != nil {
		return nil, fmt.Errorf("docker keychain for %s: %w", h, err)
	}
	return &Credential{host: h, source: "docker keychain", cfg: *cfgp, user: cfgp.Username}, nil
}

// AuthnKeychain adapts k to go-containerregistry's authn.Keychain.
func (k *Keychain) AuthnKeychain() authn.Keychain { return keychainAdapter{k} }

// Hosts lists the registries the auth file holds credentials for, in
// canonical form (see names.CanonicalHost) and sorted; never the
// credentials. Hosts given with Set are not listed.
func (k *Keychain) Hosts() []string {
	k.mu.RLock()
	defer k.mu.RUnlock()
	hosts := make([]string, 0, len(k.file))
	for h := range k.file {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	return hosts
}

type keychainAdapter struct{ k *Keychain }

func (a keychainAdapter) Resolve(r authn.Resource) (authn.Authenticator, error) {
	return a.k.Resolve(r.RegistryStr())
}

// Credential is an authn.Authenticator that never shows its secret: String,
// GoString, fmt verbs and slog all print only host, user and source.
type Credential struct {
	host, user, source string
	cfg                authn.AuthConfig
}

// Authorization implements authn.Authenticator.
func (c *Credential) Authorization() (*authn.AuthConfig, error) {
	cfg := c.cfg
	return &cfg, nil
}

// AuthorizationContext implements authn.ContextAuthenticator.
func (c *Credential) AuthorizationContext(context.Context) (*authn.AuthConfig, error) {
	return c.Authorization()
}

// Username returns the user name ("<token>" for identity tokens).
func (c *Credential) Username() string {
	switch {
	case c.user != "":
		return c.user
	case c.cfg.IdentityToken != "" || c.cfg.RegistryToken != "":
		return "<token>"
	}
	return ""
}

// Source says where the credential came from.
func (c *Credential) Source() string { return c.source }

func (c *Credential) String() string {
	return fmt.Sprintf("credentials for %s (user %q, from %s)", c.host, c.Username(), c.source)
}

// GoString keeps %#v from printing the fields.
func (c *Credential) GoString() string { return c.String() }

// Format keeps every fmt verb, including %+v, from printing the fields.
func (c *Credential) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(c.String())) }

// LogValue keeps slog from printing the fields.
func (c *Credential) LogValue() slog.Value {
	return slog.GroupValue(slog.String("host", c.host), slog.String("user", c.Username()), slog.String("source", c.source))
}

// MarshalJSON keeps encoders from writing the secret.
func (c *Credential) MarshalJSON() ([]byte, error) { return json.Marshal(c.String()) }

// parseAuthFile accepts a docker config.json, a Kubernetes Secret (JSON or
// YAML) of type dockerconfigjson or dockercfg, or a bare dockercfg map.
func parseAuthFile(b []byte) (map[string]authn.AuthConfig, error) {
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		if yerr := yaml.Unmarshal(b, &doc); yerr != nil || doc == nil {
			return nil, fmt.Errorf("neither a docker config.json nor a Kubernetes secret (not JSON or YAML)")
		}
	}
	if _, ok := doc["auths"]; ok {
		return parseDockerConfig(b, true)
	}
	// Kubernetes Secret: data (base64) or stringData (plain).
	for _, key := range []string{".dockerconfigjson", ".dockercfg"} {
		var raw []byte
		if data, ok := doc["data"].(map[string]any); ok {
			if s, ok := data[key].(string); ok {
				dec, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(s), ""))
				if err != nil {
					return nil, fmt.Errorf("secret data[%q] is not valid base64", key)
				}
				raw = dec
			}
		}
		if sd, ok := doc["stringData"].(map[string]any); ok && raw == nil {
			if s, ok := sd[key].(string); ok {
				raw = []byte(s)
			}
		}
		if raw != nil {
			return parseDockerConfig(raw, key == ".dockerconfigjson")
		}
	}
	if _, ok := doc["kind"]; ok {
		return nil, fmt.Errorf("kubernetes object without data[\".dockerconfigjson\"] or data[\".dockercfg\"]")
	}
	// Legacy bare .dockercfg: {host: {auth: ...}}.
	return parseDockerConfig(b, false)
}

func parseDockerConfig(b []byte, wrapped bool) (map[string]authn.AuthConfig, error) {
	auths := map[string]authn.AuthConfig{}
	var err error
	if wrapped {
		var cf struct {
			Auths map[string]authn.AuthConfig `json:"auths"`
		}
		err = decodeJSONOrYAML(b, &cf)
		auths = cf.Auths
	} else {
		err = decodeJSONOrYAML(b, &auths)
	}
	if err != nil {
		// authn.AuthConfig's decoder reports bad "auth" fields without the value.
		return nil, fmt.Errorf("docker config: %w", err)
	}
	if len(auths) == 0 {
		return nil, fmt.Errorf("no registry credentials in \"auths\"")
	}
	return auths, nil
}

// decodeJSONOrYAML decodes JSON, converting YAML to JSON first if needed.
func decodeJSONOrYAML(b []byte, v any) error {
	if json.Valid(bytes.TrimSpace(b)) {
		return json.Unmarshal(b, v)
	}
	var y any
	if err := yaml.Unmarshal(b, &y); err != nil {
		return fmt.Errorf("not JSON or YAML")
	}
	j, err := json.Marshal(y)
	if err != nil {
		return fmt.Errorf("not JSON-compatible YAML")
	}
	return json.Unmarshal(j, v)
}
