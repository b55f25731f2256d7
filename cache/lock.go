package cache

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// ErrLocked: another process serves the same store directory. Not a
// usage error: the flags are right, the directory is busy.
var ErrLocked = errors.New("cache directory in use")

// lockFile is DIR/lock. It is never removed (removing a lock file races
// with the next process that locks it); the kernel releases the lock when
// the process dies, kill -9 included.
const lockFile = "lock"

// lockDir takes an exclusive, non-blocking flock on DIR/lock and writes
// the process id into it, so that a second `ferry cache` on the same
// directory is refused before it empties tmp/ under the first one's
// downloads, and can name the process that holds it.
func lockDir(dir string) (release func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating the cache store: %w", err)
	}
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("locking the cache store: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder := "another process"
		if b, rerr := os.ReadFile(path); rerr == nil {
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil && pid > 0 {
				holder = "process " + strconv.Itoa(pid)
			}
		}
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s already serves the store in %s (lock %s): stop it, or give this cache a directory of its own",
				ErrLocked, holder, dir, path)
		}
		return nil, fmt.Errorf("locking the cache store %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
			_ = f.Close()
		})
	}, nil
}
