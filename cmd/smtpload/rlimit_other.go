//go:build !unix

package main

import (
	"math"
	"time"
)

func raiseNoFile() (cur, max uint64, err error) { return math.MaxUint64, math.MaxUint64, nil }

func cpuTime() time.Duration { return 0 }
