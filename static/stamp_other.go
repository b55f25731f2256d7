//go:build !unix

package static

import (
	"io/fs"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// stampOf is st's size and modification time. This platform gives no
// inode number or change time, and the modification time can be put back
// after a change (see stamp): such a stamp is never usable, so the journal
// vouches for nothing and every file is hashed on every run.
func stampOf(st fs.FileInfo, h v1.Hash) stamp {
	return stamp{Digest: h.String(), Size: st.Size(), MTime: st.ModTime().UnixNano()}
}

// lockFileNB: no advisory lock on this platform.
func lockFileNB(*os.File) error { return nil }

// openNoFollow: callers check with Lstat first on this platform.
const openNoFollow = 0
