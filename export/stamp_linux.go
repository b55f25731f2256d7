package export

import (
	"os"
	"syscall"
)

// stampOf is the identity of the file info describes (none for a nil
// info: a file that could not be read has no identity to trust).
func stampOf(info os.FileInfo) (fileStamp, bool) {
	if info == nil {
		return fileStamp{}, false
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok || !info.Mode().IsRegular() {
		return fileStamp{}, false
	}
	return fileStamp{Dev: uint64(st.Dev), Ino: st.Ino, Size: info.Size(),
		MtimeNs: info.ModTime().UnixNano(), CtimeNs: st.Ctim.Nano()}, true
}
