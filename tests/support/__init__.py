"""What several test modules share: the streams they send, and the flow processes they kill."""
