package mailsink

import (
	"bufio"
	"bytes"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"
)

func TestReadData(t *testing.T) {
	long := strings.Repeat("x", 20000)
	cases := []struct {
		name, wire, want string
	}{
		{"empty", ".\r\n", ""},
		{"simple", "a\r\nb\r\n.\r\n", "a\r\nb\r\n"},
		{"stuffed", "..\r\n...\r\n..x\r\n.\r\n", ".\r\n..\r\n.x\r\n"},
		{"dot mid-line", "a.\r\na..b\r\n.\r\n", "a.\r\na..b\r\n"},
		{"bare LF dot LF", "a\n.\nb\r\n.\r\n", "a\n.\nb\r\n"},
		{"CRLF dot LF", "a\r\n.\nb\r\n.\r\n", "a\r\n\nb\r\n"},
		{"LF dot CRLF", "a\n.\r\nb\r\n.\r\n", "a\n.\r\nb\r\n"},
		{"CR dot CR", "a\r.\rb\r\n.\r\n", "a\r.\rb\r\n"},
		{"dot CR CR LF", "a\r\n.\r\r\n.\r\n", "a\r\n\r\r\n"},
		{"8-bit", "\x80\xff\x00\xc3\xa9\r\n.\r\n", "\x80\xff\x00\xc3\xa9\r\n"},
		{"long line", long + "\r\n." + long + "\r\n.\r\n", long + "\r\n" + long + "\r\n"},
		{"no final CRLF before dot", "a.\r\n.\r\n", "a.\r\n"},
	}
	for _, tc := range cases {
		for _, size := range []int{16, 17, 4096} {
			for _, oneByte := range []bool{false, true} {
				var src io.Reader = strings.NewReader(tc.wire + "NEXT")
				if oneByte {
					src = iotest.OneByteReader(src)
				}
				r := bufio.NewReaderSize(src, size)
				got, tooBig, err := readData(r, nil, 0)
				if err != nil || tooBig {
					t.Fatalf("%s/%d: err=%v tooBig=%v", tc.name, size, err, tooBig)
				}
				if string(got) != tc.want {
					t.Errorf("%s/%d/%v: got %q, want %q", tc.name, size, oneByte, trunc(got), trunc([]byte(tc.want)))
				}
				rest, _ := io.ReadAll(r)
				if string(rest) != "NEXT" {
					t.Errorf("%s/%d: left %q after data", tc.name, size, rest)
				}
			}
		}
	}
}

func trunc(b []byte) string {
	if len(b) > 60 {
		return string(b[:60]) + "..."
	}
	return string(b)
}

func TestReadDataUnterminated(t *testing.T) {
	for _, wire := range []string{"", "a\r\n", "a\n.\n", "a\r\n.\r", "a\r\n. \r\n"} {
		_, _, err := readData(bufio.NewReaderSize(strings.NewReader(wire), 16), nil, 0)
		if err != io.EOF {
			t.Errorf("%q: err = %v, want EOF", wire, err)
		}
	}
}

func TestReadDataLimit(t *testing.T) {
	wire := strings.Repeat("0123456789\r\n", 10) + ".\r\nNEXT"
	r := bufio.NewReaderSize(strings.NewReader(wire), 16)
	got, tooBig, err := readData(r, nil, 100)
	if err != nil || !tooBig || len(got) > 100 {
		t.Fatalf("limit 100: len=%d tooBig=%v err=%v", len(got), tooBig, err)
	}
	if rest, _ := io.ReadAll(r); string(rest) != "NEXT" {
		t.Fatalf("left %q", rest)
	}
	r = bufio.NewReaderSize(strings.NewReader(wire), 16)
	got, tooBig, err = readData(r, nil, 120)
	if err != nil || tooBig || len(got) != 120 {
		t.Fatalf("limit 120: len=%d tooBig=%v err=%v", len(got), tooBig, err)
	}
}

// TestReadDataRandom checks readData against the byte-by-byte reference on
// random input drawn from the bytes that matter, with tiny buffers, and
// checks that what a conforming client stuffs comes back unchanged.
func TestReadDataRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte(".\r\n\r\nax\xff")
	for i := range 20000 {
		body := make([]byte, rng.IntN(80))
		for j := range body {
			body[j] = alphabet[rng.IntN(len(alphabet))]
		}
		checkReadData(t, body, 16+i%23)
	}
}

func FuzzReadData(f *testing.F) {
	f.Add([]byte("a\r\n.\r\n"), uint8(0))
	f.Add([]byte("..\r\n.\n.\r\r\n.\r\n"), uint8(3))
	f.Add([]byte("\r\n.\r\n"), uint8(40))
	f.Fuzz(func(t *testing.T, body []byte, size uint8) {
		checkReadData(t, body, 16+int(size))
	})
}

func checkReadData(t *testing.T, body []byte, size int) {
	t.Helper()
	// As raw wire bytes: compare with the reference.
	wantData, wantRest, ok := refDecode(body)
	r := bufio.NewReaderSize(iotest.HalfReader(bytes.NewReader(body)), size)
	got, _, err := readData(r, nil, 0)
	if !ok {
		if err != io.EOF {
			t.Fatalf("wire %q: err = %v, want EOF", body, err)
		}
	} else {
		rest, _ := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, wantData) || !bytes.Equal(rest, wantRest) {
			t.Fatalf("wire %q: got %q rest %q err %v; want %q rest %q", body, got, rest, err, wantData, wantRest)
		}
	}
	// As a body stuffed by a client: it must come back byte-exact.
	wire := dotStuff(string(body)) + ".\r\n"
	r = bufio.NewReaderSize(strings.NewReader(wire), size)
	got, _, err = readData(r, nil, 0)
	if err != nil || string(got) != withCRLF(string(body)) || r.Buffered() != 0 {
		t.Fatalf("body %q (wire %q): got %q err %v buffered %d", body, wire, got, err, r.Buffered())
	}
}
