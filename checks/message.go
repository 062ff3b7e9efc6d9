package checks

import "context"

// MessageName names the check of the message's own form.
const MessageName Name = "message"

// MessageSpec registers it: a message whose header cannot be read at all
// (too large, or not a header) is refused before anything else reads it.
var MessageSpec = Spec{
	Name:     MessageName,
	Stages:   []Stage{AtData},
	Outcomes: []string{"message.bad_header"},
	New:      func(*Env) (Check, error) { return messageCheck{}, nil },
}

type messageCheck struct{}

func (messageCheck) Run(_ context.Context, _ Stage, s *Session) []Result {
	if s.HeaderErr == nil {
		return nil
	}
	return []Result{{Check: MessageName, Outcome: "message.bad_header",
		Reason: "the message header cannot be read: " + s.HeaderErr.Error()}}
}
