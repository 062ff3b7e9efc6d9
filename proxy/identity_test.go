package proxy

import (
	"net"
	"testing"

	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/mailsink"
)

// The backend learns the real client: XCLIENT attributes as Postfix gets
// them, or a PROXY v1/v2 header as Exim gets it.
func TestClientIdentity(t *testing.T) {
	cases := []struct {
		method config.Identity
		proxy  bool
	}{
		{config.IdentityXCLIENT, false},
		{config.IdentityProxyV1, true},
		{config.IdentityProxyV2, true},
		{config.IdentityNone, false},
	}
	for _, tc := range cases {
		t.Run(string(tc.method), func(t *testing.T) {
			h := newHarness(t, harnessOpt{
				cfg: func(c *config.Config) { c.Backend.ClientIdentity = tc.method },
				sink: func(s *mailsink.Server) {
					s.XCLIENT = tc.method == config.IdentityXCLIENT
					if tc.proxy {
						s.Proxy = mailsink.ProxyRequired
					}
				},
			})
			c := h.greeted("127.0.0.2")
			c.SendMail("mail.good.test", "alice@good.test", []string{"bob@mxguard.test"}, []byte("From: alice@good.test\r\nSubject: x\r\n\r\nx\r\n"))
			c.Cmd("QUIT", 221)
			got, err := h.sink.WaitMessages(1, 5e9)
			if err != nil {
				t.Fatal(err)
			}
			m := got[0]
			if m.Helo != "mail.good.test" {
				t.Errorf("backend saw HELO %q, want the client's", m.Helo)
			}
			switch tc.method {
			case config.IdentityXCLIENT:
				want := map[string]string{"ADDR": "127.0.0.2", "NAME": "mail.good.test", "HELO": "mail.good.test", "PROTO": "ESMTP"}
				for k, v := range want {
					if m.XCLIENT[k] != v {
						t.Errorf("XCLIENT %s=%q, want %q (all: %v)", k, m.XCLIENT[k], v, m.XCLIENT)
					}
				}
				if m.XCLIENT["PORT"] == "" {
					t.Errorf("XCLIENT without PORT: %v", m.XCLIENT)
				}
			case config.IdentityProxyV1, config.IdentityProxyV2:
				src, ok := m.ProxySource.(*net.TCPAddr)
				if !ok || src.IP.String() != "127.0.0.2" || src.Port != c.Conn.LocalAddr().(*net.TCPAddr).Port {
					t.Errorf("PROXY source %v, want the client %v", m.ProxySource, c.Conn.LocalAddr())
				}
				s := h.sink.Sessions()[0]
				wantV := byte(1)
				if tc.method == config.IdentityProxyV2 {
					wantV = 2
				}
				if s.Proxy == nil || s.Proxy.Version != wantV {
					t.Errorf("PROXY header %+v, want version %d", s.Proxy, wantV)
				}
				if dst, _ := s.Proxy.DestinationAddr.(*net.TCPAddr); dst == nil || dst.String() != h.addr {
					t.Errorf("PROXY destination %v, want our listener %s", s.Proxy.DestinationAddr, h.addr)
				}
			case config.IdentityNone:
				if m.XCLIENT != nil || m.ProxySource != nil {
					t.Errorf("identity sent with method none: %v %v", m.XCLIENT, m.ProxySource)
				}
			}
		})
	}
}

// A client without a verified reverse name is NAME=[UNAVAILABLE] to Postfix.
func TestXCLIENTUnknownName(t *testing.T) {
	h := newHarness(t, harnessOpt{})
	c := h.greeted("127.0.0.4") // no PTR in the fixture
	c.Cmd("EHLO [127.0.0.4]", 250)
	c.SendMail("", "alice@good.test", []string{"bob@mxguard.test"}, []byte("From: alice@good.test\r\nSubject: x\r\n\r\nx\r\n"))
	got, err := h.sink.WaitMessages(1, 5e9)
	if err != nil {
		t.Fatal(err)
	}
	if x := got[0].XCLIENT; x["NAME"] != "[UNAVAILABLE]" || x["ADDR"] != "127.0.0.4" || x["HELO"] != "[127.0.0.4]" {
		t.Errorf("XCLIENT %v", x)
	}
	recv, _ := stripReceived(t, got[0].Data)
	if want := "from [127.0.0.4] ([127.0.0.4])"; !contains(recv, want) {
		t.Errorf("Received %q lacks %q", recv, want)
	}
}
