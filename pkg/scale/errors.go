package scale

import "errors"

var (
	// ErrNeedRoot: emulated hosts need root and iproute2 (ip, tc).
	ErrNeedRoot = errors.New("scale: emulated hosts need root and iproute2 (ip, tc)")
	// ErrInvalid is wrapped by every configuration error.
	ErrInvalid = errors.New("scale: invalid configuration")
)
