// The chat page served at / (serve/chat_page.html, embedded at build time).
#pragma once

#include <string>

namespace rlhf::serve {

const std::string& chat_page_html();

}  // namespace rlhf::serve
