//go:build !linux

package static

// fsKeepsCtime: only Linux is asked which filesystem holds the tree; on
// other systems the filesystem is taken to keep a change time (FAT and
// exFAT do not: keep a static tree on a native filesystem there).
func fsKeepsCtime(string) bool { return true }
