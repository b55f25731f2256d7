package static

import "testing"

func TestKeepsCtime(t *testing.T) {
	if keepsCtime(msdosMagic) || keepsCtime(exfatMagic) || !keepsCtime(0xef53) || !keepsCtime(0x01021994) {
		t.Error("FAT and exFAT keep no change time; ext4 and tmpfs do")
	}
}
