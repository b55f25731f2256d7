//go:build unix

package static

import (
	"io/fs"
	"os"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// stampOf is st's identity: size, modification time, change time, inode
// and device. The change time (ctime) is the one no program can set: it
// moves on every write, truncation, chmod, link and rename, and a
// utimes() that puts the modification time back moves it too.
func stampOf(st fs.FileInfo, h v1.Hash) stamp {
	s := stamp{Digest: h.String(), Size: st.Size(), MTime: st.ModTime().UnixNano()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		s.Inode, s.Device = uint64(sys.Ino), uint64(sys.Dev) //nolint:unconvert // types differ by platform
		s.CTime = ctimeOf(sys)
	}
	return s
}

// lockFileNB takes an exclusive lock on f without waiting.
func lockFileNB(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}

// openNoFollow makes open fail on a symbolic link.
const openNoFollow = syscall.O_NOFOLLOW
