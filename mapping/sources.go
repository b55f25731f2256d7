package mapping

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/ferry-airgap/ferry/internal/registry"
)

// Sources reads the source registries of tasks for export and sync: it
// picks each task's credentials in ferry's order and reaches every
// registry through one registry.Host per credential, so a run pings each
// registry once and asks for one token for all the repositories it reads.
// Set Client and Keychain; safe for concurrent use.
type Sources struct {
	Client   *registry.Client
	Keychain *registry.Keychain
	// Username and Password (--username, --password-stdin) win over every
	// other credential source for the tasks' source registries.
	Username, Password string
	// Mirrors maps a canonical source registry to the host to fetch from
	// instead (--mirror SOURCE=MIRROR). The recorded source stays SOURCE.
	Mirrors map[string]string

	mu    sync.Mutex
	hosts map[string]*registry.Host // by host and task: credentials are resolved once
}

// SourceHost returns the canonical host of t's source registry.
func (t *Task) SourceHost() string {
	host, _, _ := strings.Cut(CanonicalRegistry(t.Source.Registry), "/")
	return host
}

// SourceLogin returns the task's source auth as a login for its source
// registry, if the task has one.
func (t *Task) SourceLogin() (registry.Login, bool) {
	a := t.Source.Auth
	if a == nil {
		return registry.Login{}, false
	}
	return registry.Login{Host: t.SourceHost(), Username: a.Username, Password: a.Password, Anonymous: a.Anonymous,
		From: fmt.Sprintf("source auth of task %q", t.Name)}, true
}

// TargetPath returns the repository path m's images go to (before any
// --to prefix): `to`, else `from`.
func (m *Mapping) TargetPath() string {
	t := m.To
	if t == "" {
		t = m.From
	}
	return strings.Trim(t, "/")
}

// TargetLogins returns the target auth of the tasks that apply to host (the
// task names host as its target registry, or names none, or a
// placeholder), in order, and a warning for each one that differs from the
// first: the first one is used.
func TargetLogins(tasks []*Task, host string) ([]registry.Login, []string) {
	var out []registry.Login
	var warnings []string
	want := CanonicalRegistry(host)
	for _, t := range tasks {
		a := t.Target.Auth
		if a == nil {
			continue
		}
		th, _, _ := strings.Cut(CanonicalRegistry(t.Target.Registry), "/")
		if t.Target.Registry != "" && !t.Target.HasPlaceholder("registry") && th != want {
			continue
		}
		if len(out) > 0 && (out[0].Username != a.Username || out[0].Password != a.Password || out[0].Anonymous != a.Anonymous) {
			warnings = append(warnings, fmt.Sprintf("task %q: another target auth for %s was found first; using that one", t.Name, host))
		}
		out = append(out, registry.Login{Host: host, Username: a.Username, Password: a.Password, Anonymous: a.Anonymous,
			From: fmt.Sprintf("target auth of task %q", t.Name)})
	}
	return out, warnings
}

// LoadTargetLogins reads mapping files for their target auth only (ferry
// import -f): the logins that apply to host, and the files' warnings.
func LoadTargetLogins(host string, files ...string) ([]registry.Login, []string, error) {
	if len(files) == 0 {
		return nil, nil, nil
	}
	cfg, err := Load(files...)
	if err != nil {
		return nil, nil, err
	}
	logins, warnings := TargetLogins(cfg.Tasks, host)
	return logins, append(cfg.Warnings(), warnings...), nil
}

// Auth returns the credentials for reading host on behalf of t: --username
// when host is t's source registry, then t's source auth, then
// --auth-file, then the docker keychain (registry.Keychain.Resolve).
func (s *Sources) Auth(host string, t *Task) (authn.Authenticator, error) {
	var logins []registry.Login
	if t != nil {
		if s.Username != "" {
			logins = append(logins, registry.Login{Host: t.SourceHost(), Username: s.Username, Password: s.Password, From: "--username"})
		}
		if l, ok := t.SourceLogin(); ok {
			logins = append(logins, l)
		}
	}
	return s.Keychain.Resolve(host, logins...)
}

// Host returns the connection to host with t's credentials for it. The
// credentials are resolved once per host and task (a docker credential
// helper runs once, not once per repository).
func (s *Sources) Host(host string, t *Task) (*registry.Host, error) {
	k := host + "\x00"
	if t != nil {
		k += t.Name
	}
	s.mu.Lock()
	h, ok := s.hosts[k]
	s.mu.Unlock()
	if ok {
		return h, nil
	}
	auth, err := s.Auth(host, t)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", host, err)
	}
	if h, err = s.Client.Host(host, auth); err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.hosts == nil {
		s.hosts = map[string]*registry.Host{}
	}
	s.hosts[k] = h
	s.mu.Unlock()
	return h, nil
}

// FetchRepository returns where m's images are read from: the source
// repository, on the mirror when one is set for its registry. It also
// returns the canonical source repository ("docker.io/library/redis").
func (s *Sources) FetchRepository(t *Task, m *Mapping) (fetch name.Repository, source string, err error) {
	src, err := t.SourceRepository(m)
	if err != nil {
		return name.Repository{}, "", err
	}
	reg, path, _ := strings.Cut(src, "/")
	host := reg
	if mirror, ok := s.Mirrors[reg]; ok {
		host = mirror
	}
	fetch, err = name.NewRepository(host+"/"+path, s.Client.NameOptions(host)...)
	if err != nil {
		return name.Repository{}, "", fmt.Errorf("repository %s: %w", src, err)
	}
	return fetch, src, nil
}

// Prepare applies the tasks' skip-tls-verify and declares, per registry
// and credential, the pull scope of every repository the tasks read, so
// that one token covers them all. Calling it again is harmless.
func (s *Sources) Prepare(tasks []*Task) {
	for _, t := range tasks {
		if t.CheckSource() != nil {
			continue
		}
		if t.Source.SkipTLSVerify {
			s.Client.Configure(t.SourceHost(), registry.HostConfig{SkipTLSVerify: true})
		}
		for _, m := range t.Mappings {
			repo, _, err := s.FetchRepository(t, m)
			if err != nil {
				continue // the resolution reports it
			}
			if h, err := s.Host(repo.RegistryStr(), t); err == nil {
				h.Want(registry.Scope(repo.RepositoryStr(), registry.Pull))
			}
		}
	}
}

// Repo returns the authenticated handle for reading repo on behalf of t.
func (s *Sources) Repo(ctx context.Context, repo name.Repository, t *Task) (*registry.Repo, error) {
	h, err := s.Host(repo.RegistryStr(), t)
	if err != nil {
		return nil, err
	}
	r, err := h.Repo(ctx, repo.RepositoryStr())
	if err != nil {
		return nil, fmt.Errorf("connecting to %s for %s: %w", repo.RegistryStr(), repo.RepositoryStr(), err)
	}
	return r, nil
}

// CheckCredentials proves every set of source credentials before anything
// moves, so that a wrong password fails at once, naming the registry. It
// declares the tasks' scopes first: the token it obtains serves the run.
func (s *Sources) CheckCredentials(ctx context.Context, tasks []*Task) error {
	s.Prepare(tasks)
	for _, t := range tasks {
		if t.CheckSource() != nil || len(t.Mappings) == 0 {
			continue
		}
		repo, _, err := s.FetchRepository(t, t.Mappings[0])
		if err != nil {
			return err
		}
		h, err := s.Host(repo.RegistryStr(), t)
		if err != nil {
			return err
		}
		if h.Auth() == authn.Anonymous {
			continue
		}
		if err := h.Check(ctx, registry.Scope(repo.RepositoryStr(), registry.Pull)); err != nil {
			return fmt.Errorf("task %q: %w", t.Name, err)
		}
	}
	return nil
}
