package serve

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"golang.org/x/crypto/bcrypt"
)

// ErrHtpasswd: the htpasswd file cannot be used.
var ErrHtpasswd = errors.New("bad htpasswd file")

// Htpasswd holds bcrypt password hashes (user:$2y$…), as `htpasswd -B`
// writes them. Checks that succeeded are remembered (as a SHA-256 of user
// and password) so that bcrypt's deliberate slowness is paid once per
// client, not once per blob request.
type Htpasswd struct {
	users map[string][]byte

	mu sync.Mutex
	ok map[[32]byte]bool
}

// maxAuthCache bounds the remembered successful checks.
const maxAuthCache = 1024

// LoadHtpasswd reads an htpasswd file. Only bcrypt hashes are accepted;
// another scheme (MD5 "$apr1$", SHA "{SHA}", crypt) is an error naming its
// line, as is a line without a colon.
func LoadHtpasswd(path string) (*Htpasswd, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrHtpasswd, err)
	}
	defer f.Close()
	h, err := ParseHtpasswd(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return h, nil
}

// ParseHtpasswd reads htpasswd lines from r; see LoadHtpasswd.
func ParseHtpasswd(r io.Reader) (*Htpasswd, error) {
	h := &Htpasswd{users: map[string][]byte{}, ok: map[[32]byte]bool{}}
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		user, hash, found := strings.Cut(text, ":")
		if !found || user == "" {
			return nil, fmt.Errorf("%w: line %d: want user:bcrypt-hash", ErrHtpasswd, line)
		}
		if !strings.HasPrefix(hash, "$2y$") && !strings.HasPrefix(hash, "$2a$") && !strings.HasPrefix(hash, "$2b$") {
			return nil, fmt.Errorf("%w: line %d (user %q): only bcrypt hashes are supported (htpasswd -B)", ErrHtpasswd, line, user)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("%w: line %d (user %q): %v", ErrHtpasswd, line, user, err)
		}
		h.users[user] = []byte(hash)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrHtpasswd, err)
	}
	if len(h.users) == 0 {
		return nil, fmt.Errorf("%w: no user in it", ErrHtpasswd)
	}
	return h, nil
}

// Check reports whether password is user's.
func (h *Htpasswd) Check(user, password string) bool {
	hash, ok := h.users[user]
	if !ok {
		// Spend the same time as for a known user.
		_ = bcrypt.CompareHashAndPassword(dummyHash, []byte(password))
		return false
	}
	key := sha256.Sum256(bytes.Join([][]byte{[]byte(user), []byte(password), hash}, []byte{0}))
	h.mu.Lock()
	cached := h.ok[key]
	h.mu.Unlock()
	if cached {
		return true
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(password)) != nil {
		return false
	}
	h.mu.Lock()
	if len(h.ok) >= maxAuthCache {
		clear(h.ok)
	}
	h.ok[key] = true
	h.mu.Unlock()
	return true
}

// dummyHash is a bcrypt hash of nothing in particular.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("ferry"), bcrypt.MinCost)
