package main

import "strconv"

// A model of what Redis 7 spends on one small hash, to say which field
// costs what: MEMORY USAGE only gives the whole key, and jemalloc's size
// classes make the difference of two keys jumpy. The model is checked
// against MEMORY USAGE of the same key (modelCheck), so it is trusted only
// where it agrees.

// lpEntry is the bytes one listpack element takes (listpack.c): an integer
// in its smallest encoding when the string is one (lpStringToInt64: canonical
// decimal, no sign '+', no leading zero), else a string with a 1, 2 or 5
// byte header; then the back-length, 1 byte below 128.
func lpEntry(s string) int {
	var n int
	if v, ok := lpInt(s); ok {
		switch {
		case v >= 0 && v <= 127:
			n = 1
		case v >= -4096 && v <= 4095:
			n = 2
		case v >= -32768 && v <= 32767:
			n = 3
		case v >= -8388608 && v <= 8388607:
			n = 4
		case v >= -2147483648 && v <= 2147483647:
			n = 5
		default:
			n = 9
		}
	} else {
		switch l := len(s); {
		case l < 64:
			n = 1 + l
		case l < 4096:
			n = 2 + l
		default:
			n = 5 + l
		}
	}
	switch {
	case n <= 127:
		return n + 1
	case n < 16383:
		return n + 2
	default:
		return n + 3
	}
}

// lpInt mirrors string2ll's strictness: what round-trips through
// strconv is an integer to Redis too.
func lpInt(s string) (int64, bool) {
	if len(s) == 0 || len(s) > 20 {
		return 0, false
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || strconv.FormatInt(v, 10) != s {
		return 0, false
	}
	return v, true
}

// lpBytes is the listpack of a hash: 6 bytes of header, field and value
// elements, 1 end byte.
func lpBytes(fields map[string]string) int {
	n := 7
	for f, v := range fields {
		n += lpEntry(f) + lpEntry(v)
	}
	return n
}

// jemallocSize is the usable size jemalloc gives a request of n bytes (its
// size classes: 8, 16, then steps of 16 to 128, then four classes per
// doubling), which is what Redis counts in used_memory.
func jemallocSize(n int) int {
	switch {
	case n <= 8:
		return 8
	case n <= 128:
		return (n + 15) / 16 * 16
	}
	base := 128
	for base*2 < n {
		base *= 2
	}
	step := base / 4
	return (n + step - 1) / step * step
}

// sdsAlloc is what an sds string of length l takes: sdshdr8 (3 bytes) up
// to 255, sdshdr16 (5) up to 65535, plus the terminating NUL.
func sdsAlloc(l int) int {
	if l < 256 {
		return jemallocSize(3 + l + 1)
	}
	return jemallocSize(5 + l + 1)
}

// keyModel is MEMORY USAGE of a listpack-encoded hash as Redis 7.0
// computes it (memoryCommand, objectComputeSize): the robj (16 bytes), the
// listpack's allocation, the key's sds and sizeof(dictEntry) (24).
func keyModel(key string, fields map[string]string) int {
	return 16 + jemallocSize(lpBytes(fields)) + sdsAlloc(len(key)) + 24
}
