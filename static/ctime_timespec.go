//go:build darwin || ios || freebsd || netbsd

package static

import "syscall"

// ctimeOf is the inode's change time in nanoseconds.
func ctimeOf(st *syscall.Stat_t) int64 {
	sec, nsec := st.Ctimespec.Unix()
	return sec*1e9 + nsec
}
