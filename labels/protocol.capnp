# The label service's wire protocol. Every message travels in a frame: a
# 4-byte little-endian length, then that many bytes of one Cap'n Proto
# message (flat, unpacked). A client sends a Request and reads one Response;
# the server answers in order. Frames over the size limit, truncated frames
# and messages that do not decode close that connection only.
@0xd4c1f2b7a9e35c01;

$import "/capnp/c++.capnp".namespace("rlhf::wire");

struct Request {
  union {
    hello @0 :Hello;          # must come first on a connection
    nextTask @1 :NextTask;    # the next comparison for this rater
    submit @2 :LabelMsg;      # acknowledged only after it is committed
    undo @3 :Void;            # remove this rater's most recent label
    stats @4 :Void;           # this rater's own progress
  }
}

struct Hello {
  token @0 :Text;             # printed once by `rlhf raters add NAME`
  client @1 :Text;            # free text, for logs ("rlhf-rater 0.1")
}

struct NextTask {
  exclude @0 :List(Int64);    # comparisons skipped in this session
  prefer @1 :Int64;           # offer this one first if still open (after an undo), 0 = none
}

struct Message {
  role @0 :Text;              # "system" | "user" | "assistant"
  content @1 :Text;
}

struct Reply {
  candidateId @0 :Int64;
  text @1 :Text;
  finished @2 :Bool;          # ended with the end-of-turn token
}

struct Task {
  comparisonId @0 :Int64;
  conversation @1 :List(Message);
  replies @2 :List(Reply);    # in the order to show, left to right (randomised per rater)
  mode @3 :Mode;
  remaining @4 :UInt32;       # open tasks for this rater, this one included
  enum Mode {
    pair @0;                  # A better / B better / tie / both bad
    ranking @1;               # order K replies, ties allowed
  }
  askRatings @5 :Bool;        # also ask a 1-7 rating per reply
}

struct LabelMsg {
  comparisonId @0 :Int64;
  clientId @1 :Text;          # unique per label in the client; a resend with the same id is not doubled
  choice @2 :Text;            # "a" (left better) | "b" (right better) | "tie" | "both_bad" | "ranking"
  shownOrder @3 :List(Int64); # candidate ids as shown, left to right
  ranking @4 :List(Int32);    # rank per reply in shownOrder, 1 = best, equal = tie (ranking mode)
  ratings @5 :List(Int32);    # optional 1-7 per reply in shownOrder
  strength @6 :Int32;         # 0 unspecified, 1 slightly, 2 clearly better
  rationale @7 :Text;
}

struct RaterStats {
  rater @0 :Text;
  labels @1 :UInt32;          # labels by this rater
  remaining @2 :UInt32;       # open tasks for this rater
  goldSeen @3 :UInt32;        # gold items labelled
  goldCorrect @4 :UInt32;
}

struct Response {
  union {
    error @0 :Text;           # the request was refused; the text says why and what to do
    welcome @1 :Text;         # the rater's name
    task @2 :Task;
    noTask @3 :Void;          # nothing left for this rater
    ack @4 :Int64;            # the committed label's id
    undone @5 :Int64;         # the comparison whose label was removed (0: nothing to undo)
    stats @6 :RaterStats;
  }
}
