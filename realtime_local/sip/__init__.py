"""The engine's SIP front door: a UAS on UDP that turns INVITEs into SIP-style `LocalCall`s.

`uas.SipServer` answers SIP on UDP (`message` parses the subset it needs, `sdp` the audio offer),
announces each call with the signed `realtime.call.incoming` webhook, waits for accept/reject through
the API and bridges the caller's RTP G.711 audio (`rtp`, `g711`) into the call's session.
"""
