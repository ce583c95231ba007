package coactivetoken

import "syscall"

// peerUID asks the kernel which uid runs the process at the other end (SO_PEERCRED).
func peerUID(fd int) (int64, error) {
	cred, err := syscall.GetsockoptUcred(fd, syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	if err != nil {
		return -1, err
	}
	return int64(cred.Uid), nil
}
