package backend

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// unavailable is XCLIENT's value for an unknown attribute.
const unavailable = "[UNAVAILABLE]"

// xclientCommands returns the XCLIENT command lines that tell the backend who
// the client is (Postfix XCLIENT_README). advertised is the XCLIENT line's
// parameters from the EHLO reply: the attribute names the backend accepts
// (Postfix: "NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT ..."; Exim:
// "ADDR NAME PORT LOGIN DESTADDR DESTPORT", no HELO or PROTO). Only those are
// sent; with an empty list, all are.
//
// Values are xtext-encoded. Each command stays within 512 characters; when
// they do not fit in one, they are split and NAME/ADDR go in the last command:
// once the client address has changed, the backend no longer authorizes us to
// send XCLIENT. A value that cannot fit at all (a HELO of hundreds of odd
// bytes) is sent as [UNAVAILABLE]; the HELO reaches the backend anyway in the
// EHLO that follows.
func xclientCommands(advertised string, id Identity) ([]string, error) {
	accepted := func(name string) bool { return true }
	if names := strings.Fields(advertised); len(names) > 0 {
		accepted = func(name string) bool {
			for _, n := range names {
				if strings.EqualFold(n, name) {
					return true
				}
			}
			return false
		}
	}
	if !accepted("ADDR") {
		return nil, fmt.Errorf("%w: its XCLIENT accepts only %q, not ADDR", ErrNoXCLIENT, advertised)
	}

	type attr struct{ name, value string }
	var first, last []attr // last: the identity, sent in the final command
	add := func(list *[]attr, name, value string) {
		if value != "" && accepted(name) {
			*list = append(*list, attr{name, value})
		}
	}
	add(&first, "HELO", id.Helo)
	add(&first, "PROTO", strings.ToUpper(id.Proto))
	add(&first, "LOGIN", id.Login)
	if id.DestAddr != nil {
		add(&first, "DESTADDR", xclientAddr(id.DestAddr))
	}
	if id.DestPort > 0 {
		add(&first, "DESTPORT", strconv.Itoa(id.DestPort))
	}
	add(&last, "PORT", orUnavailable(id.Port > 0, strconv.Itoa(id.Port)))
	add(&last, "NAME", orUnavailable(id.Name != "", id.Name))
	add(&last, "ADDR", orUnavailable(id.Addr != nil, xclientAddr(id.Addr)))

	encode := func(a attr) []byte {
		b := appendXtext([]byte(" "+a.name+"="), a.value)
		if len("XCLIENT")+len(b) > maxCmdLen {
			b = []byte(" " + a.name + "=" + unavailable)
		}
		return b
	}
	var cmds []string
	cur := []byte("XCLIENT")
	for _, a := range first {
		b := encode(a)
		if len(cur)+len(b) > maxCmdLen {
			cmds = append(cmds, string(cur))
			cur = []byte("XCLIENT")
		}
		cur = append(cur, b...)
	}
	var tail []byte
	for _, a := range last {
		tail = append(tail, encode(a)...)
	}
	if len("XCLIENT")+len(tail) > maxCmdLen {
		// Only a NAME of odd bytes can make it too long: a DNS name is at
		// most 253 bytes and the rest is short.
		tail = tail[:0]
		for _, a := range last {
			if a.name == "NAME" {
				a.value = unavailable
			}
			tail = append(tail, encode(a)...)
		}
	}
	if len(cur)+len(tail) > maxCmdLen {
		cmds = append(cmds, string(cur))
		cur = []byte("XCLIENT")
	}
	cmds = append(cmds, string(append(cur, tail...)))
	return cmds, nil
}

func orUnavailable(ok bool, v string) string {
	if ok {
		return v
	}
	return unavailable
}

// xclientAddr formats an address as XCLIENT wants it: dotted quad (also for
// IPv4-mapped IPv6), or "IPV6:" and the IPv6 address.
func xclientAddr(ip net.IP) string {
	if ip4 := ip.To4(); ip4 != nil {
		return ip4.String()
	}
	return "IPV6:" + ip.String()
}

const hexUpper = "0123456789ABCDEF"

// appendXtext appends s xtext-encoded (RFC 3461 §4): bytes '!'..'~' except
// '+' and '=' as they are, every other byte as "+XX".
func appendXtext(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch >= '!' && ch <= '~' && ch != '+' && ch != '=' {
			dst = append(dst, ch)
		} else {
			dst = append(dst, '+', hexUpper[ch>>4], hexUpper[ch&0xF])
		}
	}
	return dst
}
