// A non-owning reference to a callable, for callbacks that run and return
// before their caller does (a call's per-thread job, its input fill). Unlike
// std::function it never allocates: a lambda capturing a call's locals by
// reference is larger than std::function's small buffer, so binding it to a
// std::function would allocate on every call.
#pragma once

#include <type_traits>
#include <utility>

namespace rnninfer {

template <typename Sig>
class FunctionRef;

template <typename R, typename... Args>
class FunctionRef<R(Args...)> {
 public:
  template <typename F, typename = std::enable_if_t<!std::is_same<std::decay_t<F>, FunctionRef>::value>>
  FunctionRef(F&& f)  // NOLINT(google-explicit-constructor): used like std::function
      : obj_(const_cast<void*>(static_cast<const void*>(&f))),
        call_([](void* obj, Args... args) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(obj))(std::forward<Args>(args)...);
        }) {}

  R operator()(Args... args) const { return call_(obj_, std::forward<Args>(args)...); }

 private:
  void* obj_;
  R (*call_)(void*, Args...);
};

}  // namespace rnninfer
