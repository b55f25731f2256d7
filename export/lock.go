package export

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// ErrLocked: another export is writing the same output.
var ErrLocked = errors.New("output is locked")

// lockOutput takes an exclusive lock for output so that two exports (two
// cron runs overlapping, say) never write the same bundle. The lock file
// lives in the temporary directory, named after the output's absolute path,
// so nothing is added beside the bundle; it is never removed (removing a
// lock file races with the next locker), and the kernel releases the lock
// if ferry dies.
func lockOutput(output string) (func(), error) {
	abs, err := filepath.Abs(output)
	if err != nil {
		return nil, fmt.Errorf("locking output: %w", err)
	}
	sum := sha256.Sum256([]byte(abs))
	path := filepath.Join(os.TempDir(), "ferry-export-"+hex.EncodeToString(sum[:8])+".lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("locking output: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: another ferry export is writing %s (lock %s)", ErrLocked, output, path)
		}
		return nil, fmt.Errorf("locking output: %w", err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		_ = f.Close()
	}, nil
}
