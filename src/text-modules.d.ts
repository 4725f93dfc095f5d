/** Text files imported `with { type: "text" }` (Bun): their content as a string. */
declare module "*.txt" {
  const text: string;
  export default text;
}
