package coactivetoken

import (
	"syscall"
	"unsafe"
)

// peerUID asks the kernel which uid runs the process at the other end: LOCAL_PEERCRED at
// level SOL_LOCAL (0) fills a struct xucred {u_int cr_version; uid_t cr_uid; ...}.
func peerUID(fd int) (int64, error) {
	var buf [76]byte
	size := uint32(len(buf))
	_, _, errno := syscall.Syscall6(syscall.SYS_GETSOCKOPT, uintptr(fd), 0, 1,
		uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
	if errno != 0 {
		return -1, errno
	}
	return int64(*(*uint32)(unsafe.Pointer(&buf[4]))), nil
}
