// The operator's page's one setting: a refusal (4xx, 5xx) is swapped in like a success, so its problem details are
// read where the action was taken, instead of htmx's default of dropping it.
htmx.config.responseHandling = [
  {code: "204", swap: false},
  {code: "[23]..", swap: true},
  {code: "[45]..", swap: true, error: true},
];
// No <style> of htmx's own: the page's Content-Security-Policy allows only its stylesheet.
htmx.config.includeIndicatorStyles = false;
