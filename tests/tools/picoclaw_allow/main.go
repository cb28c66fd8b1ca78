// Asks PicoClaw's own allow-list code whether its Matrix channel would take
// a message from each SENDER, given the `allow_from` of CONFIG:
//
//	picoclaw_allow CONFIG SENDER...   prints "SENDER true|false" per sender
//
// Built by tests/agents.rs against the PicoClaw module that .ci/gobuild.sh
// builds (its go.mod and go.sum, so nothing is fetched). The sender is
// described exactly as pkg/channels/matrix/matrix.go (v0.2.9) describes the
// sender of a room message, and the check is BaseChannel.IsAllowedSender's
// (pkg/channels/base.go): "*" or identity.MatchAllowed.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/sipeed/picoclaw/pkg/bus"
	"github.com/sipeed/picoclaw/pkg/identity"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: picoclaw_allow CONFIG SENDER...")
		os.Exit(2)
	}
	data, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var config struct {
		ChannelList struct {
			Matrix struct {
				AllowFrom []string `json:"allow_from"`
			} `json:"matrix"`
		} `json:"channel_list"`
	}
	if err := json.Unmarshal(data, &config); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, senderID := range os.Args[2:] {
		fmt.Println(senderID, allowed(config.ChannelList.Matrix.AllowFrom, matrixSender(senderID)))
	}
}

// matrixSender is the bus.SenderInfo of matrix.go's handleMessageEvent.
func matrixSender(senderID string) bus.SenderInfo {
	return bus.SenderInfo{
		Platform:    "matrix",
		PlatformID:  senderID,
		CanonicalID: identity.BuildCanonicalID("matrix", senderID),
		Username:    senderID,
		DisplayName: senderID,
	}
}

// allowed is BaseChannel.IsAllowedSender: an empty list lets everyone in.
func allowed(allowList []string, sender bus.SenderInfo) bool {
	if len(allowList) == 0 {
		return true
	}
	for _, entry := range allowList {
		if entry == "*" || identity.MatchAllowed(sender, entry) {
			return true
		}
	}
	return false
}
