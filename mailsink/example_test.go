package mailsink_test

import (
	"fmt"
	"net/smtp"
	"strings"
	"time"

	"github.com/mxguard/mxguard/mailsink"
)

// A backend that refuses one recipient with a multi-line reply and hangs up
// right after accepting the message.
func Example() {
	s := &mailsink.Server{Policy: mailsink.PolicyFuncs{
		RcptFunc: func(si *mailsink.SessionInfo, to string) *mailsink.Action {
			if strings.HasPrefix(to, "unknown@") {
				return &mailsink.Action{Reply: "550-5.1.1 <" + to + ">: Recipient address rejected:\n550 5.1.1 User unknown"}
			}
			return nil
		},
		DataEndFunc: func(si *mailsink.SessionInfo, m *mailsink.Message) *mailsink.Action {
			return &mailsink.Action{CloseAfter: true}
		},
	}}
	if err := s.Start("127.0.0.1:0"); err != nil {
		panic(err)
	}
	defer s.Close()

	err := smtp.SendMail(s.Addr(), nil, "alice@example.org", []string{"unknown@example.com"}, []byte("Hi\r\n"))
	fmt.Println(err)
	err = smtp.SendMail(s.Addr(), nil, "alice@example.org", []string{"bob@example.com"}, []byte("Hi\r\n"))
	fmt.Println(err != nil) // QUIT fails: the backend hung up

	msgs, _ := s.WaitMessages(1, time.Second)
	fmt.Printf("%s -> %v: %q\n", msgs[0].From, msgs[0].To, msgs[0].Data)
	// Output:
	// 550 "5.1.1 <unknown@example.com>: Recipient address rejected:\n5.1.1 User unknown"
	// true
	// alice@example.org -> [bob@example.com]: "Hi\r\n"
}
