// The program's version, stamped at configure time: the project version and
// the git commit it was built from ("0.1.0+3f2a9c1d04b7", "-dirty" when the
// tree had uncommitted changes to tracked files then; "+unknown" outside git).
// Pipeline stages record it in their fingerprints.
#pragma once

namespace rlhf {

const char* program_version();

}  // namespace rlhf
