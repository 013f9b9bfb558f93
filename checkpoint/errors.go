package checkpoint

import (
	"errors"
	"fmt"
)

// The kinds of error this package returns, for errors.Is. Each comes wrapped in an *Error
// that names the file and, where there is one, the tensor.
var (
	ErrCorrupt      = errors.New("corrupt safetensors data")
	ErrMissing      = errors.New("missing")
	ErrShape        = errors.New("wrong shape")
	ErrDType        = errors.New("unsupported dtype")
	ErrArchitecture = errors.New("unsupported architecture")
	ErrConfig       = errors.New("invalid config")
	ErrClosed       = errors.New("checkpoint is closed")
)

// Error is a failure about one file and, where there is one, one tensor in it.
type Error struct {
	File   string // path of the file (or directory) concerned
	Tensor string // tensor name, "" when the error is about the file
	Kind   error  // one of the Err values above
	Detail string // what exactly is wrong
}

func (e *Error) Error() string {
	s := "checkpoint: " + e.File
	if e.Tensor != "" {
		s += fmt.Sprintf(": tensor %q", e.Tensor)
	}
	s += ": " + e.Kind.Error()
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

func (e *Error) Unwrap() error { return e.Kind }

func errorf(file, tensor string, kind error, format string, a ...any) error {
	return &Error{File: file, Tensor: tensor, Kind: kind, Detail: fmt.Sprintf(format, a...)}
}
