//go:build linux || openbsd || dragonfly || solaris || illumos || aix

package static

import "syscall"

// ctimeOf is the inode's change time in nanoseconds.
func ctimeOf(st *syscall.Stat_t) int64 {
	sec, nsec := st.Ctim.Unix()
	return sec*1e9 + nsec
}
