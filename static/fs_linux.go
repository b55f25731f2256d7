package static

import "syscall"

// Filesystem magic numbers (statfs f_type) of filesystems whose inodes
// keep no change time: FAT stores a creation time where ctime is read
// from, and exFAT's on-disk times are set by whoever writes them.
const (
	msdosMagic = 0x4d44
	exfatMagic = 0x2011bab0
)

// fsKeepsCtime reports whether the filesystem holding dir records a change
// time the kernel moves on every change (the journal's premise, see
// stamp). When it cannot tell, it says yes: the stamps then still need
// an unchanged inode, size and modification time too.
func fsKeepsCtime(dir string) bool {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		return true
	}
	return keepsCtime(int64(fs.Type)) //nolint:unconvert // int32 on some architectures
}

func keepsCtime(magic int64) bool { return magic != msdosMagic && magic != exfatMagic }
