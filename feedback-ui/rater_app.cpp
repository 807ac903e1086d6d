// rlhf-rater: the desktop rater (Dear ImGui + GLFW + OpenGL 3). A thin
// drawing layer over RaterSession and CompareSession; all state and rules
// live there.
//
//   rlhf-rater --server HOST:PORT --token TOKEN     # rate for a label service
//   rlhf-rater --db labels.sqlite --rater NAME      # rate a local store
//   rlhf-rater ... --compare runs/demo/compare      # also the compare view
//
// Keys: 1 left better, 2 right better, 3 tie, 4 both bad, space skip,
// backspace undo, enter submits a ranking, d toggles the highlighting of
// the words two replies do not share. --script/--screenshot drive it
// headless (tests, under Xvfb): the listed keys are pressed through ImGui's
// own input, one every few frames, then the window is saved as a PNG.
#include <GLFW/glfw3.h>
#include <imgui.h>
#include <backends/imgui_impl_glfw.h>
#include <backends/imgui_impl_opengl3.h>
#include <imgui_stdlib.h>
#include <stb_image_write.h>

#include <CLI/CLI.hpp>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/fs.h"
#include "feedback-ui/backend.h"
#include "feedback-ui/compare_session.h"
#include "feedback-ui/rater_session.h"
#include "feedback-ui/word_diff.h"
#include "labels/service.h"
#include "labels/token.h"

using namespace rlhf;
using namespace rlhf::ui;

namespace {

struct Options {
  std::string server, token, token_file, tls_ca, db, rater = "me", guidelines_file, compare_dir, script, screenshot;
  std::string font = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";  // proportional; ImGui's own font if missing
  float font_size = 17;
  int width = 1280, height = 800, settle_frames = 6;
};

// Keys a script can press; names as in --script ("1,2,space,backspace,enter").
std::optional<int> key_of(const std::string& name) {
  if (name.size() == 1 && name[0] >= '1' && name[0] <= '9') return GLFW_KEY_1 + (name[0] - '1');
  if (name == "space") return GLFW_KEY_SPACE;
  if (name == "backspace") return GLFW_KEY_BACKSPACE;
  if (name == "enter") return GLFW_KEY_ENTER;
  if (name == "tab") return GLFW_KEY_TAB;
  if (name.size() == 1 && name[0] >= 'a' && name[0] <= 'z') return GLFW_KEY_A + (name[0] - 'a');
  return std::nullopt;
}

void save_screenshot(GLFWwindow* window, const std::string& path) {
  int w = 0, h = 0;
  glfwGetFramebufferSize(window, &w, &h);
  std::vector<unsigned char> pixels(static_cast<size_t>(w) * h * 4);
  glPixelStorei(GL_PACK_ALIGNMENT, 1);
  glReadBuffer(GL_BACK);
  glReadPixels(0, 0, w, h, GL_RGBA, GL_UNSIGNED_BYTE, pixels.data());
  std::vector<unsigned char> flipped(pixels.size());
  for (int y = 0; y < h; ++y)
    std::copy_n(&pixels[static_cast<size_t>(h - 1 - y) * w * 4], static_cast<size_t>(w) * 4,
                &flipped[static_cast<size_t>(y) * w * 4]);
  if (!stbi_write_png(path.c_str(), w, h, 4, flipped.data(), w * 4))
    fail(ErrorKind::kIo, "could not write the screenshot '", path, "'");
}

const ImVec4 kGreen(0.35f, 0.8f, 0.45f, 1), kRed(0.95f, 0.4f, 0.35f, 1), kGrey(0.6f, 0.6f, 0.6f, 1);

void draw_conversation(const std::vector<labels::TaskMessage>& conv, float height) {
  ImGui::BeginChild("conversation", ImVec2(0, height), true);
  for (const auto& m : conv) {
    if (m.role == "system") ImGui::TextColored(kGrey, "system");
    else ImGui::TextColored(m.role == "user" ? ImVec4(0.5f, 0.7f, 1, 1) : kGreen, "%s",
                            m.role == "user" ? "customer" : "agent");
    ImGui::TextWrapped("%s", m.content.c_str());
    ImGui::Spacing();
  }
  ImGui::EndChild();
}

// A filled label on the current line ("CUT OFF").
void badge(const char* text, ImU32 background) {
  const ImVec2 pad(5, 1);
  const ImVec2 size = ImGui::CalcTextSize(text);
  const ImVec2 at = ImGui::GetCursorScreenPos();
  ImGui::GetWindowDrawList()->AddRectFilled(at, ImVec2(at.x + size.x + 2 * pad.x, at.y + size.y + 2 * pad.y),
                                            background, 3.0f);
  ImGui::SetCursorScreenPos(ImVec2(at.x + pad.x, at.y + pad.y));
  ImGui::TextUnformatted(text);
  ImGui::SetCursorScreenPos(ImVec2(at.x, at.y + size.y + 2 * pad.y + ImGui::GetStyle().ItemSpacing.y));
}

size_t word_count(const std::string& text) {
  size_t n = 0;
  bool in_word = false;
  for (char c : text) {
    const bool space = std::isspace(static_cast<unsigned char>(c)) != 0;
    n += !space && !in_word;
    in_word = !space;
  }
  return n;
}

// Text wrapped word by word; with `highlight`, words the other reply does
// not share sit on a coloured background.
void draw_spans(const std::vector<DiffSpan>& spans, bool highlight) {
  const float right = ImGui::GetWindowContentRegionMax().x;
  const float space = ImGui::CalcTextSize(" ").x;
  const ImU32 mark = ImGui::GetColorU32(ImVec4(0.75f, 0.55f, 0.1f, 0.55f));
  int breaks = 1;  // line breaks before the next word (1 = start of a line)
  for (const DiffSpan& s : spans) {
    size_t end = s.text.size();
    while (end > 0 && std::isspace(static_cast<unsigned char>(s.text[end - 1]))) --end;
    const std::string word = s.text.substr(0, end);
    if (!word.empty()) {
      const ImVec2 size = ImGui::CalcTextSize(word.c_str());
      if (breaks == 0) {
        ImGui::SameLine(0, space);
        if (ImGui::GetCursorPosX() + size.x > right) ImGui::NewLine();
      }
      for (int b = 1; b < breaks; ++b) ImGui::NewLine();  // blank lines
      if (highlight && s.changed) {
        const ImVec2 at = ImGui::GetCursorScreenPos();
        ImGui::GetWindowDrawList()->AddRectFilled(ImVec2(at.x - 1, at.y), ImVec2(at.x + size.x + 1, at.y + size.y),
                                                  mark, 2.0f);
      }
      ImGui::TextUnformatted(word.c_str());
      breaks = 0;
    }
    for (size_t i = end; i < s.text.size(); ++i) breaks += s.text[i] == '\n';
  }
}

void draw_reply(const char* id, const char* title, const std::vector<DiffSpan>& spans, const std::string& text,
                bool finished, bool highlight, float width, float height) {
  ImGui::BeginChild(id, ImVec2(width, height), true);
  ImGui::TextColored(ImVec4(1, 0.85f, 0.4f, 1), "%s", title);
  ImGui::SameLine();
  ImGui::TextColored(kGrey, "%zu words", word_count(text));
  if (!finished) {
    ImGui::SameLine();
    badge("CUT OFF", ImGui::GetColorU32(ImVec4(0.75f, 0.2f, 0.15f, 1)));
  }
  ImGui::Separator();
  draw_spans(spans, highlight);
  if (!finished) ImGui::TextColored(kRed, "(cut off: the reply hit the length limit and did not end)");
  ImGui::EndChild();
}

// Draws two replies side by side, their differences marked when `highlight`.
void draw_pair(const char* id, const std::string& left, bool left_finished, const std::string& right,
               bool right_finished, bool highlight, float height) {
  const WordDiff d = word_diff(left, right);
  const float w = (ImGui::GetContentRegionAvail().x - ImGui::GetStyle().ItemSpacing.x) / 2;
  draw_reply((std::string(id) + "_left").c_str(), "Reply A", d.a, left, left_finished, highlight, w, height);
  ImGui::SameLine();
  draw_reply((std::string(id) + "_right").c_str(), "Reply B", d.b, right, right_finished, highlight, w, height);
}

// The guidelines' bullet points ("- ..."), for the panel beside the choice buttons.
std::vector<std::string> key_points(const std::string& guidelines, size_t max_points = 6) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < guidelines.size() && out.size() < max_points) {
    size_t end = guidelines.find('\n', start);
    if (end == std::string::npos) end = guidelines.size();
    std::string line = guidelines.substr(start, end - start);
    const size_t first = line.find_first_not_of(" \t");
    if (first != std::string::npos && line.compare(first, 2, "- ") == 0) out.push_back(line.substr(first + 2));
    start = end + 1;
  }
  return out;
}

class RaterApp {
 public:
  RaterApp(RaterSession& session, std::string guidelines, std::unique_ptr<CompareSession> compare)
      : s_(session), guidelines_(std::move(guidelines)), key_points_(key_points(guidelines_)),
        compare_(std::move(compare)) {}

  void frame() {
    const ImGuiViewport* vp = ImGui::GetMainViewport();
    ImGui::SetNextWindowPos(vp->WorkPos);
    ImGui::SetNextWindowSize(vp->WorkSize);
    ImGui::Begin("rater", nullptr,
                 ImGuiWindowFlags_NoDecoration | ImGuiWindowFlags_NoMove | ImGuiWindowFlags_NoSavedSettings);
    status_bar();
    if (ImGui::BeginTabBar("views")) {
      if (ImGui::BeginTabItem("Rate")) {
        rate_view();
        ImGui::EndTabItem();
      }
      if (compare_ && ImGui::BeginTabItem("Compare")) {
        compare_view();
        ImGui::EndTabItem();
      }
      if (ImGui::BeginTabItem("Guidelines")) {
        ImGui::BeginChild("guidelines", ImVec2(0, 0), true);
        ImGui::TextWrapped("%s", guidelines_.c_str());
        ImGui::EndChild();
        ImGui::EndTabItem();
      }
      ImGui::EndTabBar();
    }
    ImGui::End();
  }

 private:
  // Keyboard shortcuts, unless a text field has the keyboard.
  bool key(int k) { return !ImGui::GetIO().WantTextInput && ImGui::IsKeyPressed(k, false); }

  void highlight_toggle() {
    ImGui::Checkbox("[D] highlight differences", &highlight_);
    if (key(GLFW_KEY_D)) highlight_ = !highlight_;
  }

  void status_bar() {
    const auto& p = s_.progress();
    if (s_.connected()) ImGui::TextColored(kGreen, "connected");
    else ImGui::TextColored(kRed, "disconnected");
    ImGui::SameLine();
    ImGui::Text("| rater %s | done %u, remaining %u | this session %zu (%.0f/h, %.0f s per label) | this task %.0f s "
                "| unsent %zu",
                p.rater.c_str(), p.labels, p.remaining, s_.labelled_this_session(), s_.pace_per_hour(),
                s_.seconds_per_label(), s_.seconds_on_task(), s_.unsent());
    if (!s_.connected()) {
      ImGui::SameLine();
      if (ImGui::SmallButton("Reconnect")) s_.reconnect();
    }
    if (!s_.status().empty()) ImGui::TextColored(s_.connected() ? kGrey : kRed, "%s", s_.status().c_str());
  }

  void rate_view() {
    s_.refresh();
    const auto& task = s_.task();
    if (!task) {
      ImGui::Spacing();
      ImGui::Text("No tasks for you right now. New comparisons appear as they are queued.");
      if (ImGui::Button("Check again")) s_.refresh();
      if (ImGui::Button("[Backspace] Undo last label") || key(GLFW_KEY_BACKSPACE)) s_.undo();
      return;
    }
    const float avail = ImGui::GetContentRegionAvail().y;
    draw_conversation(task->conversation, avail * 0.28f);
    highlight_toggle();
    const size_t k = task->replies.size();
    const float w = (ImGui::GetContentRegionAvail().x - ImGui::GetStyle().ItemSpacing.x * (k - 1)) / k;
    const float h = avail * (task->ranking || task->ask_ratings ? 0.36f : 0.40f);
    if (k == 2) {
      draw_pair("reply", task->replies[0].text, task->replies[0].finished, task->replies[1].text,
                task->replies[1].finished, highlight_, h);
    } else {
      for (size_t i = 0; i < k; ++i) {
        if (i > 0) ImGui::SameLine();
        const std::string title = std::string("Reply ") + static_cast<char>('A' + i);
        draw_reply(("reply" + std::to_string(i)).c_str(), title.c_str(), word_spans(task->replies[i].text),
                   task->replies[i].text,
                   task->replies[i].finished, false, w, h);
      }
    }
    Draft& d = s_.draft();
    // The choice controls, with the guidelines' key points beside them.
    const float points_width = key_points_.empty() ? 0.0f : ImGui::GetContentRegionAvail().x * 0.34f;
    ImGui::BeginGroup();
    if (task->ranking || task->ask_ratings) {
      for (size_t i = 0; i < k; ++i) {
        if (i > 0) ImGui::SameLine(static_cast<float>(i) * (w + ImGui::GetStyle().ItemSpacing.x));
        ImGui::PushID(static_cast<int>(i));
        ImGui::BeginGroup();
        ImGui::PushItemWidth(w * 0.6f);
        if (task->ranking) ImGui::SliderInt("rank", &d.ranks[i], 0, static_cast<int>(k), d.ranks[i] ? "%d" : "-");
        if (task->ask_ratings) ImGui::SliderInt("rating 1-7", &d.ratings[i], 0, 7, d.ratings[i] ? "%d" : "-");
        ImGui::PopItemWidth();
        ImGui::EndGroup();
        ImGui::PopID();
      }
    }
    if (!task->ranking) {
      ImGui::Text("How much better?");
      ImGui::SameLine();
      ImGui::RadioButton("not said", &d.strength, 0);
      ImGui::SameLine();
      ImGui::RadioButton("slightly", &d.strength, 1);
      ImGui::SameLine();
      ImGui::RadioButton("clearly", &d.strength, 2);
    }
    ImGui::InputTextMultiline("rationale (optional)", &d.rationale,
                              ImVec2(ImGui::GetContentRegionAvail().x - points_width - 160, ImGui::GetTextLineHeight() * 3));
    if (task->ranking) {
      if (ImGui::Button("[Enter] Submit ranking") || key(GLFW_KEY_ENTER)) s_.submit_ranking();
    } else {
      if (ImGui::Button("[1] A better") || key(GLFW_KEY_1)) s_.choose(PairChoice::kLeft);
      ImGui::SameLine();
      if (ImGui::Button("[2] B better") || key(GLFW_KEY_2)) s_.choose(PairChoice::kRight);
      ImGui::SameLine();
      if (ImGui::Button("[3] Tie") || key(GLFW_KEY_3)) s_.choose(PairChoice::kTie);
      ImGui::SameLine();
      if (ImGui::Button("[4] Both bad") || key(GLFW_KEY_4)) s_.choose(PairChoice::kBothBad);
      ImGui::SameLine();
    }
    if (ImGui::Button("[Space] Skip") || key(GLFW_KEY_SPACE)) s_.skip();
    ImGui::SameLine();
    if (ImGui::Button("[Backspace] Undo") || key(GLFW_KEY_BACKSPACE)) s_.undo();
    ImGui::EndGroup();
    if (!key_points_.empty()) {
      ImGui::SameLine();
      ImGui::BeginChild("key_points", ImVec2(0, 0), true);
      ImGui::TextColored(kGrey, "Guidelines");
      for (const std::string& p : key_points_) ImGui::BulletText("%s", p.c_str());
      ImGui::EndChild();
    }
  }

  void compare_view() {
    CompareSession& c = *compare_;
    const WinRate t = c.tally();
    ImGui::Text("%s vs %s: %s wins %.1f%% [%.1f%%, %.1f%%] over %d votes (%d wins, %d ties, %d losses)",
                c.policy_a().c_str(), c.policy_b().c_str(), c.policy_a().c_str(), 100 * t.rate, 100 * t.lo,
                100 * t.hi, t.n, t.wins, t.ties, t.losses);
    if (!c.leaderboard().empty() && ImGui::BeginTable("leaderboard", 3, ImGuiTableFlags_Borders)) {
      ImGui::TableSetupColumn("policy");
      ImGui::TableSetupColumn("mean reward (RM)");
      ImGui::TableSetupColumn("mean gold");
      ImGui::TableHeadersRow();
      for (const auto& r : c.leaderboard()) {
        ImGui::TableNextRow();
        ImGui::TableNextColumn();
        ImGui::TextUnformatted(r.name.c_str());
        ImGui::TableNextColumn();
        ImGui::Text("%.3f", r.mean_reward);
        ImGui::TableNextColumn();
        ImGui::Text("%.3f", r.mean_gold);
      }
      ImGui::EndTable();
    }
    if (!c.last_reveal().empty()) ImGui::TextColored(kGrey, "%s", c.last_reveal().c_str());
    if (c.done()) {
      ImGui::Text("All %zu prompts judged.", c.size());
      return;
    }
    ImGui::Text("prompt %zu of %zu (names hidden until you vote)", c.position() + 1, c.size());
    const float avail = ImGui::GetContentRegionAvail().y;
    draw_conversation(c.item().conversation, avail * 0.33f);
    highlight_toggle();
    const std::string& left = c.a_on_left() ? c.item().reply_a : c.item().reply_b;
    const std::string& right = c.a_on_left() ? c.item().reply_b : c.item().reply_a;
    draw_pair("cmp", left, true, right, true, highlight_, avail * 0.45f);
    if (ImGui::Button("[1] A better") || key(GLFW_KEY_1)) c.vote(PairChoice::kLeft);
    ImGui::SameLine();
    if (ImGui::Button("[2] B better") || key(GLFW_KEY_2)) c.vote(PairChoice::kRight);
    ImGui::SameLine();
    if (ImGui::Button("[3] Tie") || key(GLFW_KEY_3)) c.vote(PairChoice::kTie);
  }

  RaterSession& s_;
  std::string guidelines_;
  std::vector<std::string> key_points_;
  std::unique_ptr<CompareSession> compare_;
  bool highlight_ = true;  // word differences between the two replies
};

// Presses script keys through ImGui's input state: down for one frame, then up.
class KeyScript {
 public:
  explicit KeyScript(const std::string& script) {
    size_t start = 0;
    while (start <= script.size() && !script.empty()) {
      const size_t comma = script.find(',', start);
      const std::string name = script.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      const auto k = key_of(name);
      if (!k) fail(ErrorKind::kUsage, "--script: unknown key '", name, "' (use 1-9, a-z, space, backspace, enter, tab)");
      keys_.push_back(*k);
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  // Call before ImGui::NewFrame(). Returns false once every key was pressed.
  bool step(int frame) {
    ImGuiIO& io = ImGui::GetIO();
    if (down_ >= 0) {
      io.KeysDown[down_] = false;
      down_ = -1;
    }
    if (keys_.empty()) return false;
    if (frame % 3 == 0) {
      down_ = keys_.front();
      keys_.pop_front();
      io.KeysDown[down_] = true;
    }
    return true;
  }

 private:
  std::deque<int> keys_;
  int down_ = -1;
};

// The token from --token_file, --token or RLHF_RATER_TOKEN, in that order.
std::string rater_token(const Options& o) {
  std::string token = o.token;
  if (!o.token_file.empty()) {
    const std::string text = read_file(o.token_file);
    token = text.substr(0, text.find_first_of("\r\n"));
  } else if (token.empty() && std::getenv("RLHF_RATER_TOKEN") != nullptr) {
    token = std::getenv("RLHF_RATER_TOKEN");
  }
  if (token.empty()) {
    fail(ErrorKind::kUsage, "--server needs your rater token: RLHF_RATER_TOKEN, --token_file FILE or --token ",
         "(from `rlhf raters add NAME`)");
  }
  return token;
}

int run(const Options& o) {
  std::unique_ptr<RatingBackend> backend;
  if (!o.server.empty()) {
    const std::string token = rater_token(o);
    const auto [host, port] = labels::parse_host_port(o.server);
    backend = make_remote_backend(host, port, token, o.tls_ca);
  } else if (!o.db.empty()) {
    backend = make_local_backend(o.db, o.rater, labels::DeskConfig{});
  } else {
    fail(ErrorKind::kUsage, "give --server HOST:PORT --token TOKEN, or --db FILE to rate a local store");
  }
  std::string guidelines =
      "Rate which reply a good support agent would send.\n\n"
      "- Does it address what the customer asked?\n- Does it use the right name and order number?\n"
      "- Does it invent policies or facts?\n- Is it polite, complete, neither clipped nor rambling?\n"
      "\nKeys: 1 A better, 2 B better, 3 tie, 4 both bad, space skip, backspace undo, d highlight differences.";
  if (!o.guidelines_file.empty()) guidelines = read_file(o.guidelines_file);
  std::unique_ptr<CompareSession> compare;
  if (!o.compare_dir.empty()) compare = std::make_unique<CompareSession>(o.compare_dir, "", "");

  RaterSession session(*backend, labels::new_rater_token().substr(0, 12));
  session.refresh();

  glfwSetErrorCallback([](int code, const char* what) { std::fprintf(stderr, "GLFW error %d: %s\n", code, what); });
  if (!glfwInit()) fail(ErrorKind::kUsage, "cannot open a window (no display?). Set DISPLAY, or run under xvfb-run");
  glfwWindowHint(GLFW_CONTEXT_VERSION_MAJOR, 3);
  glfwWindowHint(GLFW_CONTEXT_VERSION_MINOR, 0);
  GLFWwindow* window = glfwCreateWindow(o.width, o.height, "rlhf rater", nullptr, nullptr);
  if (!window) {
    glfwTerminate();
    fail(ErrorKind::kUsage, "cannot create an OpenGL 3.0 window; check the display and its drivers");
  }
  glfwMakeContextCurrent(window);
  glfwSwapInterval(o.script.empty() && o.screenshot.empty() ? 1 : 0);
  IMGUI_CHECKVERSION();
  ImGui::CreateContext();
  ImGui::GetIO().IniFilename = nullptr;
  if (!o.font.empty() && path_exists(o.font)) {
    if (ImGui::GetIO().Fonts->AddFontFromFileTTF(o.font.c_str(), o.font_size) == nullptr) {
      fail(ErrorKind::kIo, "--font: cannot read the TrueType font '", o.font, "'");
    }
  } else if (!o.font.empty()) {
    std::fprintf(stderr, "font '%s' not found: using ImGui's built-in font (install fonts-dejavu-core, or give --font)\n",
                 o.font.c_str());
  }
  ImGui::StyleColorsDark();
  ImGui_ImplGlfw_InitForOpenGL(window, true);
  ImGui_ImplOpenGL3_Init("#version 130");

  RaterApp app(session, guidelines, std::move(compare));
  const bool scripted = !o.script.empty() || !o.screenshot.empty();
  KeyScript script(o.script);
  int frame = 0, settle = o.settle_frames;
  auto last_retry = std::chrono::steady_clock::now();
  while (!glfwWindowShouldClose(window)) {
    if (scripted) glfwPollEvents();
    else glfwWaitEventsTimeout(0.5);
    if (!session.connected() && std::chrono::steady_clock::now() - last_retry > std::chrono::seconds(5)) {
      last_retry = std::chrono::steady_clock::now();
      session.reconnect();  // automatic retry; unsent labels go out once it is back
    }
    const bool pressing = script.step(frame);
    ImGui_ImplOpenGL3_NewFrame();
    ImGui_ImplGlfw_NewFrame();
    ImGui::NewFrame();
    app.frame();
    ImGui::Render();
    int w, h;
    glfwGetFramebufferSize(window, &w, &h);
    glViewport(0, 0, w, h);
    glClearColor(0.1f, 0.1f, 0.12f, 1);
    glClear(GL_COLOR_BUFFER_BIT);
    ImGui_ImplOpenGL3_RenderDrawData(ImGui::GetDrawData());
    ++frame;
    if (scripted && !pressing && --settle <= 0) {
      if (!o.screenshot.empty()) save_screenshot(window, o.screenshot);
      break;
    }
    glfwSwapBuffers(window);
  }
  session.flush();
  ImGui_ImplOpenGL3_Shutdown();
  ImGui_ImplGlfw_Shutdown();
  ImGui::DestroyContext();
  glfwDestroyWindow(window);
  glfwTerminate();
  if (session.unsent() > 0) {
    std::fprintf(stderr, "%zu labels could not be sent (the label service is unreachable)\n", session.unsent());
    return 1;
  }
  std::printf("%zu labels this session\n", session.labelled_this_session());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App cli{"rlhf-rater: rate model replies for the label store (Dear ImGui)"};
  cli.add_option("--server", o.server, "label service HOST:PORT (rlhf serve-labels)");
  cli.add_option("--token", o.token,
                 "your rater token (from rlhf raters add NAME); visible to other users in `ps`, so prefer "
                 "RLHF_RATER_TOKEN or --token_file");
  cli.add_option("--token_file", o.token_file, "read the token from this file (its first line)");
  cli.add_option("--tls_ca", o.tls_ca,
                 "connect with TLS, checking the service's certificate against this PEM file (or 'system')");
  cli.add_option("--db", o.db, "rate a local label store instead of a server");
  cli.add_option("--rater", o.rater, "rater name for --db")->capture_default_str();
  cli.add_option("--guidelines", o.guidelines_file, "text file shown in the Guidelines tab (e.g. docs/rubric.md)");
  cli.add_option("--compare", o.compare_dir, "output folder of `rlhf compare`: adds the Compare view");
  cli.add_option("--script", o.script, "headless: keys to press, e.g. 1,2,space,backspace,3");
  cli.add_option("--screenshot", o.screenshot, "headless: save the window as PNG after the script and exit");
  cli.add_option("--font", o.font, "TrueType font for all text (\"\" = ImGui's built-in)")->capture_default_str();
  cli.add_option("--font_size", o.font_size, "font size in pixels")->capture_default_str();
  cli.add_option("--width", o.width)->capture_default_str();
  cli.add_option("--height", o.height)->capture_default_str();
  CLI11_PARSE(cli, argc, argv);
  try {
    return run(o);
  } catch (const Error& e) {
    std::fprintf(stderr, "error (%s): %s\n", error_kind_name(e.kind()), e.what());
    return 2;
  }
}
