package message

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
)

// Limits on the header ParseHeader accepts. A header that never ends must
// not hold a connection's memory hostage; real ones are a few KB and a few
// dozen fields (forwarded mail: a hundred or so).
const (
	MaxHeaderBytes  = 1 << 20
	MaxHeaderFields = 1000
)

// ErrHeaderTooLarge is returned by ParseHeader for a header over the limits.
var ErrHeaderTooLarge = errors.New("message: header too large")

// Field is one header field exactly as it came.
type Field struct {
	// Name is the field name, as written: the text before the first colon
	// with surrounding white space removed. A line without a colon (not a
	// valid field, but kept to stay byte-exact) has the whole line as name.
	Name string
	// Raw is the whole field: name, colon, value, folded lines and line
	// ends, byte for byte.
	Raw []byte
	// Offset is where Raw starts in the message.
	Offset int64
}

// Value returns the field's value unfolded (RFC 5322 §2.2.3: a line end
// followed by white space is removed) and trimmed of surrounding white
// space.
func (f *Field) Value() string {
	_, v, ok := bytes.Cut(f.Raw, []byte(":"))
	if !ok {
		return ""
	}
	return strings.TrimSpace(unfold(v))
}

// unfold removes the line ends inside a field; the white space that
// follows them stays. The field's own final line end goes too.
func unfold(v []byte) string {
	var b strings.Builder
	b.Grow(len(v))
	for len(v) > 0 {
		i := bytes.IndexByte(v, '\n')
		if i < 0 {
			b.Write(v)
			break
		}
		b.Write(bytes.TrimSuffix(v[:i], []byte("\r")))
		v = v[i+1:]
	}
	return b.String()
}

var readerPool = sync.Pool{New: func() any { return bufio.NewReader(nil) }}

// Header is the parsed header of a message.
type Header struct {
	Fields []Field
	// End is the empty line that ended the header ("\r\n" or "\n"), or nil
	// when the message ended inside the header (it has no body).
	End []byte
}

// ParseHeader reads a message header from r and returns it with the
// offset at which the body starts. It accepts CRLF and bare LF line ends,
// a message without body or final line end, and lines that are not
// fields; it gives up with ErrHeaderTooLarge beyond MaxHeaderBytes or
// MaxHeaderFields.
//
// If r is a *bufio.Reader, ParseHeader reads no further than the end of
// the header, so the body can be read from r next.
func ParseHeader(r io.Reader) (*Header, int64, error) {
	br, ok := r.(*bufio.Reader)
	if !ok {
		// Pooled: a reader per message is 4 KB of garbage at every DATA.
		br = readerPool.Get().(*bufio.Reader)
		br.Reset(r)
		defer func() {
			br.Reset(nil)
			readerPool.Put(br)
		}()
	}
	h := &Header{}
	var off int64
	for {
		line, err := readLine(br, MaxHeaderBytes-off)
		if err != nil && err != io.EOF {
			return nil, 0, err
		}
		if len(line) == 0 { // EOF at a line start
			return h, off, nil
		}
		if isBlank(line) {
			h.End = line
			return h, off + int64(len(line)), nil
		}
		if (line[0] == ' ' || line[0] == '\t') && len(h.Fields) > 0 {
			f := &h.Fields[len(h.Fields)-1]
			f.Raw = append(f.Raw, line...)
		} else {
			if len(h.Fields) == MaxHeaderFields {
				return nil, 0, fmt.Errorf("%w: more than %d fields", ErrHeaderTooLarge, MaxHeaderFields)
			}
			h.Fields = append(h.Fields, Field{Name: fieldName(line), Raw: line, Offset: off})
		}
		off += int64(len(line))
		if err == io.EOF {
			return h, off, nil
		}
	}
}

// readLine returns the next line with its line end, owning its bytes, or
// what is left before EOF. It fails if the line is longer than limit.
func readLine(br *bufio.Reader, limit int64) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		if int64(len(line)+len(frag)) > limit {
			return nil, fmt.Errorf("%w: more than %d bytes", ErrHeaderTooLarge, MaxHeaderBytes)
		}
		line = append(line, frag...)
		if err != bufio.ErrBufferFull {
			return line, err
		}
	}
}

func isBlank(line []byte) bool {
	return len(line) == 1 && line[0] == '\n' || len(line) == 2 && line[0] == '\r' && line[1] == '\n'
}

func fieldName(line []byte) string {
	name, _, _ := bytes.Cut(line, []byte(":"))
	return string(bytes.TrimSpace(name))
}

// Values returns the unfolded values of the fields called name (case
// insensitive), in order.
func (h *Header) Values(name string) []string {
	var vs []string
	for i := range h.Fields {
		if strings.EqualFold(h.Fields[i].Name, name) {
			vs = append(vs, h.Fields[i].Value())
		}
	}
	return vs
}

// Remove drops the fields for which pred, given the field's name and
// unfolded value, returns true. RFC 8601 §5 is the reason it exists: an
// Authentication-Results field that claims to come from us but arrived
// from outside is a forgery and must go before we add ours.
func (h *Header) Remove(pred func(name, value string) bool) {
	kept := h.Fields[:0]
	for _, f := range h.Fields {
		if !pred(f.Name, f.Value()) {
			kept = append(kept, f)
		}
	}
	clear(h.Fields[len(kept):])
	h.Fields = kept
}

// Len returns the size of the header as it would be written: the
// remaining fields and the empty line.
func (h *Header) Len() int64 {
	n := int64(len(h.End))
	for _, f := range h.Fields {
		n += int64(len(f.Raw))
	}
	return n
}

// WriteTo writes the fields and the empty line that ended the header,
// byte for byte.
func (h *Header) WriteTo(w io.Writer) (int64, error) {
	var n int64
	for _, f := range h.Fields {
		m, err := w.Write(f.Raw)
		n += int64(m)
		if err != nil {
			return n, err
		}
	}
	m, err := w.Write(h.End)
	return n + int64(m), err
}

// WriteWithHeaders writes a message: prepend (our own header fields,
// complete with line ends), then the header h (as parsed, minus what was
// removed), then the body. Everything the client sent that was not
// removed comes out byte for byte.
func WriteWithHeaders(w io.Writer, prepend []byte, h *Header, body io.Reader) error {
	bw := bufio.NewWriterSize(w, copyBufSize)
	if _, err := bw.Write(prepend); err != nil {
		return err
	}
	if _, err := h.WriteTo(bw); err != nil {
		return err
	}
	if _, err := io.Copy(bw, body); err != nil {
		return err
	}
	return bw.Flush()
}
